"""The documentation pipeline up to processed notebooks (Quarto, which renders them, is not installed in CI).

nbdev's `proc_nbs` turns every notebook into the page Quarto renders; these tests run it once (module fixture)
and read its output, `_proc/*.ipynb`.

The documentation rule (`undocumented`): every name in the nbdev-generated `__all__` of every module belongs to the
notebook whose `# %% ../nbs/<notebook>.ipynb` cell defines it, and that notebook's processed page documents it:
- a function or class has a rendered `show_doc` cell on the page (written in the notebook, or added by nbdev's
  `add_show_docs` after a visible `#| export` cell) AND a docstring of its own for that `show_doc` to render;
- any other name (a constant or table bound by assignment, which `add_show_docs` never documents) has a rendered
  `show_doc`, or is named as inline code in a visible markdown cell: a span like `NAME` or `NAME['key']`.
Hidden cells do not count (nbdev removes them from the page), nor does code that merely uses a name.
"""
import ast, fnmatch, json, re, shutil, subprocess, sys
from collections import defaultdict
from pathlib import Path

import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
PROCESS = "from nbdev.quarto import proc_nbs; proc_nbs(n_workers=0)"

_NOTEBOOK_CELL = re.compile(r'^# %% (\S+\.ipynb)', flags=re.M)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _module_all(tree):
    "The first `__all__` that is a literal list: the one nbdev writes (a module may rebind it later, as `visionnb.all` does)."
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == '__all__':
            try: return ast.literal_eval(node.value)
            except ValueError: pass
    return []


def _definitions(code):
    "{name: has a docstring} for a function or class, {name: None} for an assigned name, at the top level of `code`."
    found = {}
    for node in ast.parse(code).body:
        if isinstance(node, _DEFS): found[node.name] = bool(ast.get_docstring(node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in getattr(target, 'elts', [target]):
                    if isinstance(name, ast.Name): found[name.id] = None
    return found


def exported_symbols(lib):
    "{notebook: {name: True/False (function or class with/without docstring) or None (other)}} for `__all__` under `lib`."
    symbols = defaultdict(dict)
    for module in sorted(Path(lib).rglob('*.py')):
        source = module.read_text()
        names = _module_all(ast.parse(source))
        parts = _NOTEBOOK_CELL.split(source)  # [header, notebook, cell code, notebook, cell code, ...]
        home = {}
        for notebook, code in zip(parts[1::2], parts[2::2]):
            home.update({name: (Path(notebook).name, kind) for name, kind in _definitions(code).items()})
        # a name listed in `_all_` but not defined in the module (a re-export) belongs to the module's notebook
        default = (Path(parts[1]).name if len(parts) > 1 else module.name, None)
        for name in names:
            notebook, kind = home.get(name, default)
            symbols[notebook][name] = kind
    return dict(symbols)


def _show_doc_targets(source):
    try: tree = ast.parse(source)
    except SyntaxError: return set()
    return {ast.unparse(node.value.args[0]) for node in tree.body
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and getattr(node.value.func, 'id', None) == 'show_doc' and node.value.args}


def page_documentation(page):
    "Names with a rendered `show_doc` on a processed page, and the text of its visible markdown cells."
    cells = json.loads(Path(page).read_text())['cells']
    shown = set().union(*[_show_doc_targets(''.join(c.get('source', ''))) for c in cells
                          if c['cell_type'] == 'code' and c.get('outputs')])
    prose = '\n'.join(''.join(c.get('source', '')) for c in cells if c['cell_type'] == 'markdown')
    return shown, prose


def _named_in_prose(name, prose): return re.search(rf'`{re.escape(name)}\b[^`\n]*`', prose) is not None


def undocumented(lib, proc):
    "{notebook: [names]} of the exported names that the processed pages in `proc` do not document (the module docstring's rule)."
    missing = {}
    for notebook, symbols in sorted(exported_symbols(lib).items()):
        page = Path(proc) / notebook
        shown, prose = page_documentation(page) if page.exists() else (set(), '')
        names = [name for name, docstring in symbols.items()
                 if not (docstring if name in shown else docstring is None and _named_in_prose(name, prose))]
        if names: missing[notebook] = names
    return missing


def _report(gaps):
    return '\n'.join(f'  {notebook}: {", ".join(names)}' for notebook, names in sorted(gaps.items()))


def _process(project):
    r = subprocess.run([sys.executable, '-W', 'always', '-c', PROCESS], cwd=project, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope='module')
def processed(tmp_path_factory):
    "A copy of the project with every notebook processed for the docs, and proc_nbs's stderr."
    project = tmp_path_factory.mktemp('docs')
    shutil.copy(ROOT / 'settings.ini', project)
    shutil.copytree(ROOT / 'nbs', project / 'nbs')
    return project, _process(project).stderr


def test_every_notebook_becomes_a_titled_page(processed):
    project, stderr = processed
    # nbdev runs such cells while building docs, outside the notebook's context, so they break the site
    assert 'Found cells containing imports and other code' not in stderr, stderr[-3000:]
    notebooks = sorted(p.name for p in (ROOT / 'nbs').glob('*.ipynb'))
    assert notebooks and sorted(p.name for p in (project / '_proc').glob('*.ipynb')) == notebooks
    for name in notebooks:
        first = json.loads((project / '_proc' / name).read_text())['cells'][0]
        assert first['cell_type'] == 'raw' and 'title:' in ''.join(first['source']), f'{name} has no title front matter'


def test_every_exported_symbol_is_documented(processed):
    project, _ = processed
    found = undocumented(ROOT / 'visionnb', project / '_proc')
    assert not found, ('Exported names missing from the docs (see the rule in tests/test_docs.py). For a function or class '
                       'add a `show_doc` (or un-hide its export cell) and a docstring; for a constant, name it as `NAME` in '
                       'a markdown cell that says what it is, or make it private:\n' + _report(found))


def _cell(source, cell_type='code'):
    cell = {'cell_type': cell_type, 'metadata': {}, 'source': source}
    return {**cell, 'execution_count': None, 'outputs': []} if cell_type == 'code' else cell


def test_the_check_reports_exactly_the_undocumented_names(tmp_path):
    "00_core with six new exports, three of them undocumented under the rule: the checker names exactly those three."
    shutil.copy(ROOT / 'settings.ini', tmp_path)
    (tmp_path / 'nbs').mkdir()
    nb = json.loads((ROOT / 'nbs' / '00_core.ipynb').read_text())
    nb['cells'][-1:-1] = [
        _cell('`DOCUMENTED_LIMIT` is how many boxes a test keeps.', 'markdown'),
        _cell('#| export\nDOCUMENTED_LIMIT = 4'),
        _cell('#| export\nUNDOCUMENTED_LIMIT = 3'),
        _cell('#| export\ndef documented_helper():\n    "Has a docstring, and nbdev adds its `show_doc`."\n    return 1'),
        _cell('#| export\n#| hide\ndef hidden_helper():\n    "Exported from a hidden cell, so no `show_doc` on the page."\n    return 2'),
        _cell('#| export\ndef no_docstring_helper(): return 3'),
    ]
    (tmp_path / 'nbs' / '00_core.ipynb').write_text(json.dumps(nb))
    export = "from nbdev.export import nb_export; nb_export('nbs/00_core.ipynb', 'lib')"
    r = subprocess.run([sys.executable, '-c', export], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _process(tmp_path)
    expected = {'UNDOCUMENTED_LIMIT', 'hidden_helper', 'no_docstring_helper'}
    found = undocumented(tmp_path / 'lib', tmp_path / '_proc')
    assert {nb: set(names) for nb, names in found.items()} == {'00_core.ipynb': expected}, _report(found)


def _sidebar_entries(contents):
    for item in contents:
        if isinstance(item, str): yield 'file', item
        elif 'auto' in item: yield 'glob', item['auto']
        elif 'href' in item and 'contents' not in item: yield 'file', item['href']
        else: yield from _sidebar_entries(item.get('contents', []))


def test_site_configuration_and_sidebar():
    "nbdev_docs keeps our sidebar, _quarto.yml's metadata files exist, and the sidebar lists every notebook once."
    nbs = ROOT / 'nbs'
    settings = (ROOT / 'settings.ini').read_text()
    assert re.search(r'^custom_sidebar\s*=\s*True\s*$', settings, flags=re.M), 'nbdev_docs would overwrite nbs/sidebar.yml'
    quarto = yaml.safe_load((nbs / '_quarto.yml').read_text())
    assert quarto['project']['type'] == 'website'
    for name in quarto['metadata-files']: assert (nbs / name).exists(), name
    contents = yaml.safe_load((nbs / 'sidebar.yml').read_text())['website']['sidebar']['contents']
    assert contents[0] == 'index.ipynb', 'the home page comes first'
    notebooks = sorted(p.name for p in nbs.glob('*.ipynb'))
    listed = []
    for kind, entry in _sidebar_entries(contents):
        if kind == 'file': assert (nbs / entry).exists(), f'sidebar.yml lists {entry}, which does not exist'
        listed += [entry] if kind == 'file' else fnmatch.filter(notebooks, entry)
    assert sorted(listed) == notebooks, (f'missing from sidebar.yml: {sorted(set(notebooks) - set(listed))}; '
                                         f'listed twice: {sorted({n for n in listed if listed.count(n) > 1})}')
