"""A code cell's exit code follows Python's: `sys.exit(n)` in run_code gives n, as `python -c` would."""
from __future__ import annotations

import pytest

from sandboxd.agent.execution import kernel_exit_code


@pytest.mark.parametrize("success,timed_out,error,code", [
    (True, False, None, 0),
    (False, True, "Execution timed out after 5s (kernel interrupted, state kept)", 124),
    (False, False, "ZeroDivisionError: division by zero", 1),
    (False, False, "SystemExit: 3", 3),
    (False, False, "SystemExit: 0", 0),
    (False, False, "SystemExit: None", 0),
    (False, False, "SystemExit: ", 0),
    (False, False, "SystemExit: 256", 0),
    (False, False, "SystemExit: bye", 1),
    (False, False, "the Python kernel died", 1),
])
def test_exit_code_of_a_cell(success, timed_out, error, code):
    assert kernel_exit_code(success, timed_out, error) == code
