"""The secured stack for these tests: started by the test run itself (`stack up --secure` in a state dir
and on ports of its own, beside the open stack), stopped at the end if this run started it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.secure.stack import SecureStack

CDC = str(Path(sys.executable).parent / "cdc")


@pytest.fixture(scope="session")
def secure_stack():
    stack = SecureStack()
    try:
        stack.up()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"the secured stack did not start: {exc}", pytrace=False)
    print(f"\nsecured stack ready in {stack.start_seconds:.1f}s (state {stack.state_dir})", file=sys.stderr)
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def secure_env(secure_stack: SecureStack) -> dict[str, str]:
    return secure_stack.client_env()


@pytest.fixture(scope="session")
def secrets(secure_stack: SecureStack) -> dict[str, str]:
    values = secure_stack.secrets()
    assert len(values) >= 8, sorted(values)  # every password of the stack, not a partial list
    return values


class Run:
    """One finished `cdc` invocation: exit code, combined output, seconds taken."""

    def __init__(self, args: tuple[str, ...], result: subprocess.CompletedProcess, seconds: float) -> None:
        self.args, self.code, self.seconds = args, result.returncode, seconds
        self.stdout, self.stderr = result.stdout, result.stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return f"cdc {' '.join(self.args)} -> {self.code} in {self.seconds:.1f}s\n{self.output[-3000:]}"


@pytest.fixture(scope="session")
def run_cdc(secure_env):
    outputs: list[Run] = []

    def run(*args: str, env: dict | None = None, timeout: float = 300, stdin: str | None = None) -> Run:
        t0 = time.monotonic()
        result = subprocess.run([CDC, *args], capture_output=True, text=True, timeout=timeout, input=stdin,
                                env={**secure_env, **(env or {})})
        outputs.append(Run(args, result, time.monotonic() - t0))
        return outputs[-1]

    run.outputs = outputs
    return run

