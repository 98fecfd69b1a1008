"The `visionnb` console script, run as a user runs it: in a subprocess."
import json, os, subprocess
from pathlib import Path
import pytest
from visionnb.data.shapes import shapes_records
from visionnb.learner.det import export_detector, load_detector

BCCD = Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'bccd'
COMMANDS = ['quickstart', 'shapes', 'check', 'check-data', 'convert', 'stats', 'train', 'eval', 'predict', 'export']
COCO_KEYS = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']


def run(*args, cwd=None, env_home=None):
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1')   # one torch thread: much faster than two on two busy cores
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


# Detection: one short training (tiny data, 128 px, one epoch, a narrow FCOS) shared by the tests below.
TINY_TRAIN = ['--shapes-size', 'tiny', '--size', '128', '--epochs', '1', '--bs', '4', '--channels', '32']


@pytest.fixture(scope='module')
def trained(home, tmp_path_factory):
    out = tmp_path_factory.mktemp('train')
    r = run('train', *TINY_TRAIN, '--out', out, '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_train_writes_model_figure_and_metrics(trained):
    out, result = trained
    assert result['model'] == str(out / 'model.pth') and (out / 'model.pth').stat().st_size > 100_000
    assert (out / 'predictions.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and (out / 'predictions.png').stat().st_size > 10_000
    written = json.loads((out / 'metrics.json').read_text())
    assert list(written['metrics']) == COCO_KEYS and all(0 <= v <= 1 for v in written['metrics'].values())
    assert written['metrics'] == result['metrics'] and written['epochs'] == result['epochs'] == 1
    assert set(result['losses']['valid']) == {'loss', 'classification', 'bbox_regression', 'bbox_dfl'}   # GFL, the default
    assert result['data']['images'] == {'train': 24, 'valid': 8} and result['check']['train']['counts']['images_out'] == 24
    assert not list(out.glob('.*')), 'no temporary files left behind'


def test_eval_on_the_saved_model_equals_what_train_reported(trained, home):
    out, result = trained
    r = run('eval', out / 'model.pth', '--json', env_home=home)   # data and batch size from metrics.json
    assert r.returncode == 0, r.stderr
    evaluated = json.loads(r.stdout)
    assert evaluated['images'] == 8 and evaluated['data']['size'] == 'tiny'
    assert evaluated['metrics'] == pytest.approx(result['metrics'], abs=1e-6)


def test_eval_for_people_prints_the_coco_table(trained, home):
    r = run('eval', trained[0] / 'model.pth', '--data', 'shapes', '--shapes-size', 'tiny', env_home=home)
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.split() == COCO_KEYS)
    values = r.stdout.splitlines()[r.stdout.splitlines().index(header) + 1].split()
    assert [float(v) for v in values] == pytest.approx([trained[1]['metrics'][k] for k in COCO_KEYS], abs=5e-4)


def test_predict_on_a_folder(trained, home, tmp_path):
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    sizes = {}
    for i, (w, h) in enumerate([(150, 100), (90, 160), (128, 128)]):   # not the training size: boxes must come back in these pixels
        src = sorted((home / 'shapes-tiny-seed0' / 'images').rglob('*.png'))[i]
        Image.open(src).convert('RGB').resize((w, h)).save(images / f'img{i}.jpg')
        sizes[f'img{i}.jpg'] = (h, w)
    r = run('predict', trained[0] / 'model.pth', images, '--score-thresh', '0.1', '--out', tmp_path / 'out', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    written = json.loads((tmp_path / 'out' / 'predictions.json').read_text())
    assert written['images'] == printed['detections'] and len(written['images']) == 3
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.png')) == ['img0.png', 'img1.png', 'img2.png']
    assert sum(len(d['boxes']) for d in written['images']) > 0
    for d in written['images']:
        h, w = sizes[Path(d['file']).name]
        assert (d['height'], d['width']) == (h, w)
        assert len(d['boxes']) == len(d['scores']) == len(d['names']) and all(s >= 0.1 for s in d['scores'])
        assert all(0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h for x1, y1, x2, y2 in d['boxes'])
        assert set(d['names']) <= set(written['vocab'])
        assert Path(d['png']).stat().st_size > 5_000


def test_export_dynamic_onnx_agrees_with_pytorch(trained, home, tmp_path):
    valid = home / 'shapes-tiny-seed0' / 'images' / 'valid'
    out = tmp_path / 'fcos.onnx'
    r = run('export', trained[0] / 'model.pth', '--out', out, '--dynamic', '--batch', '3', '--check', valid, '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result['onnx'] == str(out) and out.stat().st_size > 100_000 and result['vocab'] == trained[1]['settings']['vocab']
    assert result['input_shape'][1] == 3 and not any(isinstance(d, int) for d in (result['input_shape'][0], *result['input_shape'][2:]))
    check = result['check']
    assert check['images'] == 8 and check['count_agreement'] == 1 and check['label_agreement'] == 1, check
    assert check['box_diff'] < 1e-2 and check['score_diff'] < 1e-4, check


def test_a_missing_model_is_named(tmp_path):
    missing = tmp_path / 'no_such_model.pth'
    r = run('eval', missing)
    assert r.returncode == 1 and 'no_such_model.pth' in r.stderr and 'visionnb train' in r.stderr and 'Traceback' not in r.stderr
    r = run('predict', missing, tmp_path, '--json')
    assert r.returncode == 1 and 'no_such_model.pth' in json.loads(r.stdout)['message']


def test_check_data_is_check(trained, home):
    shapes = home / 'shapes-tiny-seed0'   # made by the training
    args = [shapes / 'annotations' / 'valid.json', '--img-dir', shapes / 'images', '--json']
    a, b = json.loads(run('check', *args).stdout), json.loads(run('check-data', *args).stdout)
    assert a == b and a['images_out'] == 8


def test_train_solov2_evaluates_and_predicts_masks(home, tmp_path):
    out = tmp_path / 'solo'
    r = run('train', *TINY_TRAIN, '--arch', 'solov2', '--out', out, '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert list(result['metrics']) == ['mask_' + k for k in COCO_KEYS] + COCO_KEYS
    assert set(result['losses']['valid']) == {'loss', 'classification', 'mask'}
    assert result['settings']['model_kwargs']['num_grids'] == [24, 20, 16, 12, 8]
    r = run('eval', out / 'model.pth', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['metrics'] == pytest.approx(result['metrics'], abs=1e-6)
    # one epoch leaves every score under the thresholds: lowered, they travel in the export (its postprocess settings)
    model = load_detector(out / 'model.pth')
    model.score_thresh = model.update_thresh = 0.
    export_detector(model, tmp_path / 'open.pth')
    image = shapes_records('tiny', 'valid')[0].file
    r = run('predict', tmp_path / 'open.pth', image, '--score-thresh', '0', '--out', tmp_path / 'pred', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    found = json.loads((tmp_path / 'pred' / 'predictions.json').read_text())['images'][0]
    assert len(found['segmentations']) == len(found['boxes']) > 0
    assert all(s['size'] == [found['height'], found['width']] for s in found['segmentations'])
