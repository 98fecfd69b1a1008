"The documentation pipeline up to processed notebooks (Quarto, which renders them, is not installed in CI)."
import json, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCESS = "from nbdev.quarto import proc_nbs; proc_nbs(n_workers=0)"


def test_every_notebook_becomes_a_titled_page(tmp_path):
    shutil.copy(ROOT / 'settings.ini', tmp_path)
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs')
    r = subprocess.run([sys.executable, '-W', 'always', '-c', PROCESS], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # nbdev runs such cells while building docs, outside the notebook's context, so they break the site
    assert 'Found cells containing imports and other code' not in r.stderr, r.stderr[-3000:]
    notebooks = sorted(p.name for p in (ROOT / 'nbs').glob('*.ipynb'))
    assert notebooks and sorted(p.name for p in (tmp_path / '_proc').glob('*.ipynb')) == notebooks
    for name in notebooks:
        first = json.loads((tmp_path / '_proc' / name).read_text())['cells'][0]
        assert first['cell_type'] == 'raw' and 'title:' in ''.join(first['source']), f'{name} has no title front matter'
