"""The `kagent` command line: user commands, plus the controller and runtime entry points."""
