"""Importing the package must write no file and read no pickle or checkpoint."""
import subprocess
import sys
import textwrap


def test_import_writes_nothing_and_loads_no_pickle(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        events = []
        def hook(event, args):
            if event == "open":
                path, mode = str(args[0]), str(args[1] or "r")
                if any(c in mode for c in "wax+") or path.endswith((".pkl", ".pt", ".pth", ".pkl.gz")):
                    events.append((path, mode))
            if event == "pickle.find_class":
                events.append(("unpickle", str(args)))
        sys.addaudithook(hook)
        import equiformer, equiformer.so3, equiformer.nn, equiformer.testing, equiformer.data
        from equiformer import Equiformer
        Equiformer(dim=8, num_degrees=3, depth=1)
        print(repr(events))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert list(tmp_path.iterdir()) == []
