"""Pure-Python twins of the native cores; `meetq._native` chooses between them."""
