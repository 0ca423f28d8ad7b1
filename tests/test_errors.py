"""zephyr.errors.exit_on_error: the one place a user error or Ctrl-C becomes an exit code."""

import pytest

from zephyr.errors import ZephyrError, exit_on_error


def test_a_user_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e, exit_on_error():
        raise ZephyrError("bad --thing; pass a good one")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: bad --thing; pass a good one" in err and "Traceback" not in err


def test_ctrl_c_is_exit_130(capsys):
    with pytest.raises(SystemExit) as e, exit_on_error():
        raise KeyboardInterrupt
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_other_errors_pass_through():
    with pytest.raises(ValueError), exit_on_error():
        raise ValueError("a bug, with its traceback")
