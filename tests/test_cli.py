"The `visionnb` console script, run as a user runs it: in a subprocess."
import json, os, subprocess, sys
from pathlib import Path
import pytest

BCCD = Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'bccd'
COMMANDS = ['quickstart', 'shapes', 'check', 'convert', 'stats']


def run(*args, cwd=None, env_home=None):
    env = dict(os.environ, MPLBACKEND='Agg')
    if env_home: env['VISIONNB_HOME'] = str(env_home)
    return subprocess.run(['visionnb', *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope='module')
def home(tmp_path_factory): return tmp_path_factory.mktemp('visionnb_home')


def test_help_lists_every_subcommand():
    r = run('--help')
    assert r.returncode == 0
    for c in COMMANDS: assert c in r.stdout


@pytest.mark.parametrize('cmd', COMMANDS)
def test_every_subcommand_has_help_and_json(cmd):
    r = run(cmd, '--help')
    assert r.returncode == 0 and '--json' in r.stdout and 'usage: visionnb ' + cmd in r.stdout


def test_shapes_json_is_cached_and_deterministic(home):
    first = json.loads(run('shapes', '--size', 'tiny', '--json', env_home=home).stdout)
    again = json.loads(run('shapes', '--size', 'tiny', '--json', env_home=home).stdout)
    assert first['path'] == again['path'] and Path(first['path']).is_relative_to(home)
    assert (Path(first['path']) / 'annotations' / 'train.json').exists()


def test_shapes_without_json_shows_progress_and_the_path(tmp_path):
    r = run('shapes', '--size', 'tiny', '--root', tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'train images' in r.stdout and f"path: {tmp_path / 'shapes-tiny-seed0'}" in r.stdout


def test_quickstart_writes_both_figures(home, tmp_path):
    r = run('quickstart', '--size', 'tiny', '--img-size', '256', '--bs', '4', '--out', tmp_path / 'qs', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out['images']['train'] > 0 and out['check']['ok']
    for fig in out['figures']:
        assert Path(fig).stat().st_size > 10_000, fig
        assert Path(fig).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list((tmp_path / 'qs').glob('.*tmp*')), 'no temporary files left behind'


def test_quickstart_for_people_prints_its_steps(home, tmp_path):
    r = run('quickstart', '--size', 'tiny', '--img-size', '256', '--bs', '4', '--out', tmp_path, env_home=home)
    assert r.returncode == 0, r.stderr
    for step in ['1/4', '2/4', '3/4', '4/4', 'no findings', str(tmp_path / 'train_batch.png'), str(tmp_path / 'dataset_stats.png')]:
        assert step in r.stdout, step


def test_check_on_a_broken_file_names_it_and_exits_1(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"images": [')
    r = run('check', bad, '--format', 'coco')
    assert r.returncode == 1
    assert 'bad.json' in r.stderr and 'Traceback' not in r.stderr


@pytest.mark.skipif(not BCCD.exists(), reason=f'real-data check skipped: {BCCD} not found')
def test_bccd_convert_check_stats(tmp_path):
    r = run('convert', BCCD, '--format', 'voc', '--out', tmp_path / 'bccd.json', '--json')
    assert r.returncode == 0, r.stderr
    conv = json.loads(r.stdout)
    assert conv['images'] == 292 and conv['classes'] == ['Platelets', 'RBC', 'WBC']

    r = run('check', tmp_path / 'bccd.json', '--img-dir', BCCD / 'JPEGImages', '--policy', 'raise')
    assert r.returncode == 1 and 'degenerate' in r.stderr.lower()

    r = run('check', tmp_path / 'bccd.json', '--img-dir', BCCD / 'JPEGImages', '--policy', 'fix', '--json', '--out', tmp_path / 'clean.json')
    assert r.returncode == 0, r.stderr
    fixed = json.loads(r.stdout)
    assert fixed['objects_in'] - fixed['objects_out'] >= 2, 'the two degenerate boxes are dropped, and counted'

    r = run('stats', tmp_path / 'clean.json', '--img-dir', BCCD / 'JPEGImages', '--anchors', '5', '--out', tmp_path / 'stats.png', '--json')
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert len(stats['anchors']['wh']) == 5 and 0.5 < stats['anchors']['mean_iou'] <= 1
    assert (tmp_path / 'stats.png').stat().st_size > 10_000
