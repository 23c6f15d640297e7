"""The command line's own mistakes (unknown verb, bad or missing option) are one line, exit 2."""

from __future__ import annotations

import pytest

from dlfm_auto.cli import main


@pytest.mark.parametrize(("args", "needle"), [
    (["nosuchverb"], "invalid choice: 'nosuchverb'"),
    (["run-study", "lstm", "--n-jobs", "-3"], "must be an integer >= 0"),
    (["run-study", "lstm", "--sampler", "nope"], "invalid choice: 'nope'"),
    (["report", "final"], "required: study_name"),
    (["report", "nosuchkind"], "invalid choice: 'nosuchkind'"),
    (["best", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["worker", "x", "--timeout", "-5"], "must be a number of seconds > 0"),
    # a password in a bad command line is masked like everywhere else
    (["studies", "--storage", "postgresql://u:SECRET@h/db", "--bogus"], "unrecognized"),
])
def test_bad_command_line_is_one_line_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0] and "SECRET" not in err and "usage:" not in err
