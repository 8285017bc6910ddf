from meetq.ops.cli import main

main()
