"""Console output (utils/console.py): tidy numbers in the final JSON line, and a message on
its own line above a progress bar."""
import json


def test_tidy_numbers_in_the_final_line(capsys):
    from utils.console import print_result

    print_result("x", dict(acc=28.00000011920929, n=3, nested={"f": 0.1 + 0.2}))
    assert json.loads(capsys.readouterr().out) == dict(script="x", acc=28.0, n=3,
                                                       nested={"f": 0.3})


def test_a_message_goes_on_its_own_line_above_a_progress_bar(monkeypatch):
    import tqdm

    from utils import console

    written = []
    monkeypatch.setattr(tqdm.tqdm, "write",
                        classmethod(lambda cls, s, file=None: written.append(s)))
    bar = tqdm.tqdm(total=3, disable=False)
    try:
        console.info("stopping after this step")
    finally:
        bar.close()
    assert written == ["stopping after this step"]
