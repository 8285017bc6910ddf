from meetq.cli import main

main()
