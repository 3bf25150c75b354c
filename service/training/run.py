"""Child-process entry point: ``python -m service.training.run --spec SPEC.json``.

stdout carries only protocol lines (docs/local-trainer.md); logs go to stderr. Exit code 0
after ``finished`` or ``paused``, 1 after ``error``; SIGTERM ends the process at once (exit 143);
SIGUSR1 asks for a pause at the next step boundary.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from types import FrameType

from service.training.errors import OUT_OF_MEMORY, TRAINING_FAILED, TrainingError, is_out_of_memory
from service.training.protocol import Emitter

SIGTERM_EXIT = 128 + signal.SIGTERM
PAUSE_SIGNAL = signal.SIGUSR1


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Checkpoints are marked complete only after they are fully written, so stopping mid-save
    # is safe; exiting at once keeps "cancel stops training within seconds" even mid-step.
    os.write(2, b"training stopped by SIGTERM\n")
    os._exit(SIGTERM_EXIT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tuneline training child process")
    parser.add_argument("--spec", required=True, help="path of SPEC.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Installed before the slow imports, so that an early request is kept rather than killing the
    # process (SIGUSR1's default action); the engine honours it at the first step boundary. A list
    # append takes no lock, unlike threading.Event, so the handler cannot deadlock the main thread.
    pause_signals: list[int] = []
    signal.signal(PAUSE_SIGNAL, lambda signum, frame: pause_signals.append(signum))
    emitter = Emitter.claim_stdout()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from service.training.engine import train
        from service.training.spec import TrainSpec

        spec = TrainSpec.load(args.spec)
        logging.getLogger(__name__).info(
            "job %s: training %s (%s)", spec.job_id, spec.base_model, spec.method
        )
        train(spec, emitter, lambda: bool(pause_signals))
    except TrainingError as exc:
        emitter.emit("error", code=exc.code, message=exc.message)
        return 1
    except BaseException as exc:  # report every failure on the protocol, then exit non-zero
        traceback.print_exc(file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            emitter.emit("error", code=TRAINING_FAILED, message="training interrupted")
        elif is_out_of_memory(exc):
            emitter.emit("error", code=OUT_OF_MEMORY, message=f"out of memory: {exc}"[:2000])
        else:
            emitter.emit("error", code=TRAINING_FAILED, message=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
