"The shapes dataset built the ways the notebook cannot show: by a pool of processes, and by two processes at once."
import json, os, subprocess, sys
from pathlib import Path
from visionnb.data.shapes import SHAPES_SIZES, shapes_classification_path, shapes_path


def files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*.png'))}


def annotations(folder: Path, split: str) -> dict:
    data = json.loads((folder / 'annotations' / f'{split}.json').read_text())
    data.pop('info')   # records the date it was written
    return data


def test_pool_builds_the_same_bytes_as_one_process(tmp_path):
    serial, pooled = shapes_path('tiny', root=tmp_path / 'serial', workers=0), shapes_path('tiny', root=tmp_path / 'pool', workers=2)
    assert len(files(serial)) == 2 * sum(SHAPES_SIZES['tiny'][s] for s in ('train', 'valid'))
    assert files(pooled) == files(serial)
    for split in ('train', 'valid'): assert annotations(pooled, split) == annotations(serial, split)
    crops = shapes_classification_path('tiny', root=tmp_path / 'pool', workers=2)
    assert files(crops) == files(shapes_classification_path('tiny', root=tmp_path / 'serial', workers=0))


def test_two_processes_building_at_once_both_get_a_complete_dataset(tmp_path):
    code = "import sys; from visionnb.data.shapes import shapes_path; print(shapes_path('tiny', root=sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / 'shapes-tiny-seed0')
    assert sorted(os.listdir(tmp_path)) == ['shapes-tiny-seed0']   # no temporary folder left behind
    assert files(Path(outs[0])) == files(shapes_path('tiny', root=tmp_path / 'reference'))
