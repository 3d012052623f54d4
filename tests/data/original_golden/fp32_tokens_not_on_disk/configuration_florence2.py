# A marker, not Florence-2's code: nothing may ever import a checkpoint's code.
import pathlib

pathlib.Path(__file__).with_name("IMPORTED").write_text("checkpoint code was imported")
raise RuntimeError("a checkpoint's code must never run")
