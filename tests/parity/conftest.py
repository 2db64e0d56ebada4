"""The parity suite's summary: how many scenarios give the answers AWS recorded."""

from __future__ import annotations

import pytest

from tests.parity import results


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not results.OUTCOMES:
        return
    matched = sum(results.OUTCOMES.values())
    terminalreporter.write_line(
        f"AWS parity: {matched}/{len(results.OUTCOMES)} scenarios match recorded AWS answers"
    )
