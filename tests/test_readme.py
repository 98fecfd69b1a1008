"The README promises two commands; CI must run the second one verbatim."
import importlib.util, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / 'README.md').read_text(), flags=re.S)


def test_readme_has_exactly_two_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert all('\n' not in c for c in cmds), 'each README command is one line'
    assert cmds[0].endswith('visionnb train'), 'the main job is training on the embedded dataset'
    assert 'nbdev_test' in cmds[1] and 'pytest tests/' in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [l.strip() for l in (ROOT / '.ci' / 'run').read_text().splitlines()]
    assert readme_commands()[1] in ci_lines


def test_readme_is_generated_from_index_notebook():
    spec = importlib.util.spec_from_file_location('readme', ROOT / '.ci' / 'readme.py')
    readme = importlib.util.module_from_spec(spec); spec.loader.exec_module(readme)
    assert (ROOT / 'README.md').read_text() == readme.render(), 'README.md is stale: run python .ci/readme.py'


def test_home_page_links_every_notebook():
    linked = set(re.findall(r'\]\(([\w.-]+\.ipynb)\)', (ROOT / 'README.md').read_text()))
    notebooks = {p.name for p in (ROOT / 'nbs').glob('*.ipynb')} - {'index.ipynb'}
    assert notebooks - linked == set(), f'the home page (nbs/index.ipynb) does not link {sorted(notebooks - linked)}'
    assert linked - notebooks == set(), f'the home page links notebooks that do not exist: {sorted(linked - notebooks)}'
