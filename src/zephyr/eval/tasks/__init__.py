"""One module per evaluation task; see zephyr/eval/task.py for the interface."""
