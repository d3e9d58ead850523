"""RESULTS.md and every README's results blocks are what `make report` would write from the committed
results/*.json (and results/bench/*.json): a result file committed without its tables, or a table
edited by hand, fails here."""
from shared import report


def test_make_report_would_change_nothing(capsys):
    rc = report.main(["--check"])
    assert rc == 0, "out of date (run `make report` and commit): " + capsys.readouterr().out[-2000:]
