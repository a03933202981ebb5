"""What the command-line entry points share: the error/exit/output policy and the --model/--workdir arguments."""
