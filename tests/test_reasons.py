"""The reason a failed trial records is the first error of the failing process."""

from __future__ import annotations

import pytest

from seel.reasons import MAX_REASON_CHARS, FirstError, error_message, first_error, trial_reason

# IBM FL 2.0.1's aggregator started without its data file (paths shortened): the cause is the
# first ERROR line; the follow-on AttributeError and the shutdown lines come after it.
IBMFL_MISSING_DATA = """\
2026-12-03 05:05:08.446 WARNING ibmfl.util.config :: Yaml configuration file not found: log_config.yaml
2026-12-03T05:05:08.447Z | 2.0.1 | INFO | ibmfl.util.config                                  | Getting details from config file.
2026-12-03T05:05:09.323Z | 2.0.1 | INFO | ibmfl.util.data_handlers.mnist_sklearn_data_handler | Loaded training data from data/mnist.npz
2026-12-03T05:05:09.323Z | 2.0.1 | INFO | __main__                                           | Error occurred while loading aggregator configuration
2026-12-03T05:05:09.323Z | 2.0.1 | ERROR | __main__                                           | Unable to load training data from path provided in config file: data/mnist.npz
Traceback (most recent call last):
  File "/venv/ibmfl/util/data_handlers/mnist_sklearn_data_handler.py", line 78, in load_dataset
    data_train = np.load(self.file_name, allow_pickle=True)
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
FileNotFoundError: [Errno 2] No such file or directory: 'data/mnist.npz'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/venv/ibmfl/aggregator/aggregator.py", line 73, in __init__
    self.data_handler = data_cls_ref(data_config=data_info)
OSError: Unable to load training data from path provided in config file: data/mnist.npz
Traceback (most recent call last):
  File "/venv/ibmfl/aggregator/aggregator.py", line 120, in start
    self.proto_handler.start()
AttributeError: 'Aggregator' object has no attribute 'proto_handler'
""".splitlines()

# A party that crashes in training: the traceback, then the web server's lines.
CRASH_IN_TRAINING = """\
2026-12-03T05:05:09.323Z | 2.0.1 | INFO | ibmfl.party.party                                  | Received request TRAIN
Traceback (most recent call last):
  File "/venv/ibmfl/party/training/local_training_handler.py", line 120, in train
    self.fl_model.fit_model(train_data)
  File "/venv/ibmfl/model/sklearn_SGD_linear_fl_model.py", line 90, in fit_model
    raise ValueError("Input contains NaN")
ValueError: Input contains NaN
127.0.0.1 - - [03/Dec/2026 05:05:10] "POST /shutdown HTTP/1.1" 200 -
""".splitlines()


def test_ibmfl_missing_data_names_the_first_error() -> None:
    assert first_error(IBMFL_MISSING_DATA) == (
        "Unable to load training data from path provided in config file: data/mnist.npz"
    )


def test_crash_in_training_is_the_traceback_exception_not_the_last_line() -> None:
    assert first_error(CRASH_IN_TRAINING) == "ValueError: Input contains NaN"


def test_first_traceback_wins_over_chained_ones() -> None:
    lines = [line for line in IBMFL_MISSING_DATA if "ERROR" not in line]
    assert first_error(lines) == "FileNotFoundError: [Errno 2] No such file or directory: 'data/mnist.npz'"


def test_error_line_after_a_traceback_does_not_replace_it() -> None:
    lines = ["Traceback (most recent call last):", '  File "x.py", line 1', "KeyError: 'a'"]
    lines += ["2026-01-01 00:00:00,000 - root - ERROR - later"]
    assert first_error(lines) == "KeyError: 'a'"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2026-12-03T05:05:09.323Z | 2.0.1 | ERROR | __main__   | Unable to load", "Unable to load"),
        ("2026-12-03 05:05:08.446 ERROR  ibmfl.util.config :: bad config", "bad config"),
        ("2026-12-03 05:05:08,446 - ibmfl.x - ERROR - it broke", "it broke"),
        ("ERROR:root:plain default format", "plain default format"),
        ("ERROR:werkzeug:Error on request:", "Error on request:"),
        ("2026-12-03 05:05:08 CRITICAL something fatal", "something fatal"),
        ("[ERROR] bracketed", "bracketed"),
        ("\x1b[31mERROR\x1b[0m | app | coloured\r", "coloured"),
    ],
)
def test_error_lines_in_common_layouts(line: str, message: str) -> None:
    assert error_message(line) == message


@pytest.mark.parametrize(
    "line",
    [
        "2026-12-03T05:05:09Z | 2.0.1 | INFO | x | no ERROR found in the data",
        "2026-12-03 05:05:08 WARNING ibmfl.x :: ERROR rate rising",
        "ERRORS: 3",
        "TERRORIST",
        "127.0.0.1 - - [03/Dec/2026 05:05:10] \"POST /shutdown HTTP/1.1\" 200 -",
        "Traceback (most recent call last):",
        "",
        "ERROR",  # a level with no message says nothing
    ],
)
def test_other_lines_are_not_errors(line: str) -> None:
    assert error_message(line) is None


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        (
            "/usr/bin/python3: Error while finding module specification for "
            "'ibmfl.aggregator.aggregator' (ModuleNotFoundError: No module named 'ibmfl')",
            "Error while finding module specification for 'ibmfl.aggregator.aggregator' "
            "(ModuleNotFoundError: No module named 'ibmfl')",
        ),
        ("/opt/venv/bin/python3.11: No module named ibmfl", "No module named ibmfl"),
        ("python: can't open file '/x/y.py': [Errno 2] No such file or directory",
         "can't open file '/x/y.py': [Errno 2] No such file or directory"),
    ],
)
def test_the_interpreters_own_complaint_is_a_cause(line: str, cause: str) -> None:
    assert first_error(["starting", line]) == cause


def test_nothing_found_is_none() -> None:
    assert first_error(["starting", "127.0.0.1 - - \"GET / HTTP/1.1\" 200 -", "bye"]) is None
    assert first_error([]) is None


def test_a_traceback_cut_off_before_its_exception_line_gives_none() -> None:
    scan = FirstError()
    for line in ["Traceback (most recent call last):", '  File "a.py", line 3, in f', "    g()"]:
        scan.feed(line)
    assert scan.cause is None
    assert scan.in_traceback


def test_lines_interleaved_into_a_traceback_are_passed_over() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "a.py", line 3, in f',
        "2026-12-03T05:05:09.323Z | 2.0.1 | INFO | werkzeug | 127.0.0.1 GET /",
        "127.0.0.1 - - [03/Dec/2026] \"POST /x HTTP/1.1\" 500 -",
        "",
        "    g()",
        "mod.sub.CustomError: went wrong: badly",
    ]
    assert first_error(lines) == "mod.sub.CustomError: went wrong: badly"


def test_bare_exception_name_ends_a_traceback() -> None:
    assert first_error(["Traceback (most recent call last):", '  File "a"', "KeyboardInterrupt"]) == (
        "KeyboardInterrupt"
    )


def test_syntax_error_traceback() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "cfg.py", line 1',
        "    x = ",
        "        ^",
        "SyntaxError: invalid syntax",
    ]
    assert first_error(lines) == "SyntaxError: invalid syntax"


def test_traceback_header_after_a_prefix_on_the_same_line() -> None:
    lines = ["12.3 Traceback (most recent call last):", '  File "a"', "ValueError: x"]
    assert first_error(lines) == "ValueError: x"


def test_first_error_is_kept_once_found() -> None:
    scan = FirstError()
    scan.feed("ERROR:root:first")
    scan.feed("ERROR:root:second")
    scan.feed("Traceback (most recent call last):")
    scan.feed("ValueError: third")
    assert scan.cause == "first"
    assert not scan.in_traceback


def test_long_causes_are_shortened_and_spaces_collapsed() -> None:
    cause = first_error(["ERROR:root:" + "word   " * 200])
    assert cause is not None
    assert len(cause) == MAX_REASON_CHARS
    assert cause.endswith("...")
    assert "  " not in cause


def test_trial_reason_names_the_process() -> None:
    assert trial_reason("party1", "ValueError: x", "fallback") == "party1: ValueError: x"
    assert trial_reason("party1", None, "party1 exited with code 3") == "party1 exited with code 3"
