"""Execute notebooks in place and store their outputs, as the docs site shows them (it runs nothing itself).

    python .ci/execute.py nbs/22_det_fcos.ipynb [more notebooks]

Runs every cell as `nbdev_test` does (cells flagged `#| gpu` are skipped on a machine without one) and stops at
the first error. Outside Jupyter fastprogress prints text progress bars and fastai 2.8 (the pinned version) warns
at import that `torch.jit.script` is deprecated: neither belongs on a page, so bars are off (fastai's epoch table
is still printed) and that one warning is filtered. Temporary folders and this checkout's location are
written as `<tmp>/` and relative paths, so that no machine's paths end up in the stored outputs.
"""
import re, sys, warnings
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
import fastprogress.fastprogress as fp

ROOT = Path(__file__).resolve().parents[1]
GPU = re.compile(r'^#\s*\|\s*gpu\b', re.M)
TMP = re.compile(r'/tmp/tmp\w+/')

def _clean_text(text: str) -> str: return TMP.sub('<tmp>/', text.replace(f'{ROOT}/', '').replace('\r', ''))

def _clean(outputs):
    for o in outputs:
        if 'text' in o: o['text'] = _clean_text(''.join(o['text']))
        for kind, value in o.get('data', {}).items():
            if kind.startswith('text/'): o['data'][kind] = _clean_text(''.join(value))

def execute(path: Path):
    nb = read_nb(path)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    with working_directory(path.parent):   # as nbdev_test: relative paths such as ../../shared resolve from nbs/
        CaptureShell(path.parent).run_all(nb, exc_stop=True, preproc=lambda c: bool(GPU.search(c.source)))
    for c in nb.cells:
        if c.cell_type == 'code': _clean(c.outputs)
    write_nb(nb, path)

if __name__ == '__main__':
    fp.NO_BAR, fp.ConsoleProgressBar.fill = True, ''   # no bar, and no bar character printed when one starts
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
    for name in sys.argv[1:]:
        print('executing', name, flush=True)
        execute(Path(name).resolve())
