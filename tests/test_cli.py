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
    r = run('convert', BCCD, '--format', 'voc', '--out', tmp_path / 'bccd.json')
    assert r.returncode == 1 and 'degenerate' in r.stderr.lower() and not (tmp_path / 'bccd.json').exists(), 'convert checks first'
    r = run('convert', BCCD, '--format', 'voc', '--policy', 'fix', '--out', tmp_path / 'bccd.json', '--json')
    assert r.returncode == 0, r.stderr
    conv = json.loads(r.stdout)
    assert conv['images'] == conv['images_in'] == 292 and conv['classes'] == ['Platelets', 'RBC', 'WBC']
    assert conv['objects_in'] - conv['objects'] >= 2, 'the two degenerate boxes are dropped, and counted'

    r = run('check', BCCD, '--format', 'voc', '--policy', 'raise')
    assert r.returncode == 1 and 'degenerate' in r.stderr.lower()

    r = run('check', tmp_path / 'bccd.json', '--img-dir', BCCD / 'JPEGImages', '--policy', 'fix', '--json', '--out', tmp_path / 'clean.json')
    assert r.returncode == 0, r.stderr
    fixed = json.loads(r.stdout)
    assert fixed['objects_in'] == fixed['objects_out'] == conv['objects'] and fixed['report']['ok'], 'what convert wrote is clean'

    r = run('stats', tmp_path / 'clean.json', '--img-dir', BCCD / 'JPEGImages', '--anchors', '5', '--out', tmp_path / 'stats.png', '--json')
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert len(stats['anchors']['wh']) == 5 and 0.5 < stats['anchors']['mean_iou'] <= 1
    assert (tmp_path / 'stats.png').stat().st_size > 10_000


def test_convert_writes_no_box_outside_its_image(tmp_path):
    from PIL import Image
    (tmp_path / 'images').mkdir(); (tmp_path / 'labels').mkdir()
    Image.new('RGB', (40, 20)).save(tmp_path / 'images' / 'a.jpg')
    (tmp_path / 'labels' / 'a.txt').write_text('0 0.9 0.5 0.4 0.5\n1 -0.1 0.5 0.1 0.2\n0 0.5 0.5 0.5 0.5\n')   # crosses the right edge; wholly left of it; inside
    args = ['convert', tmp_path / 'images', '--format', 'yolo', '--out', tmp_path / 'a.json']
    r = run(*args)
    assert r.returncode == 1 and 'box-partly-outside' in r.stderr and 'box-outside-image' in r.stderr and not (tmp_path / 'a.json').exists()
    r = run(*args, '--policy', 'fix', '--json')
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)['objects_in'], json.loads(r.stdout)['objects']) == (3, 2)
    boxes = [a['bbox'] for a in json.loads((tmp_path / 'a.json').read_text())['annotations']]
    assert boxes == [[28.0, 5.0, 12.0, 10.0], [10.0, 5.0, 20.0, 10.0]]


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
    served = result['data']['objects_served']['train']   # every object of every epoch is served or counted as dropped
    assert served['passes'] == 1 and served['images'] == 24
    assert served['objects'] + served['dropped'] == result['data']['objects']['train'] and served['objects'] > 0


def test_a_diverging_training_names_its_step_and_the_flags_to_change(home, tmp_path):
    r = run('train', *TINY_TRAIN, '--lr', '1000', '--out', tmp_path / 'nan', '--json', env_home=home)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    error = json.loads(r.stdout.strip().splitlines()[-1])
    assert error['error'] == 'TrainingError' and error['message'].startswith('the loss became non-finite during training'), error
    assert '--lr' in error['message'] and '--clip NORM' in error['message'] and 'GradientClip' not in error['message'], error


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



def test_train_from_a_whole_detector_then_eval_and_predict(trained, home, tmp_path):
    "`--weights`: the trained model starts the next training; its report, then eval and predict on the result."
    out, first = trained
    r = run('train', *TINY_TRAIN, '--weights', out / 'model.pth', '--out', tmp_path / 'tuned', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    transfer, vocab = result['transfer'], result['settings']['vocab']
    assert (transfer['source'], transfer['arch'], transfer['initialized'], transfer['ignored']) == ('visionnb', 'gfl', [], [])
    assert transfer['classes'] == {name: name for name in vocab} and len(transfer['rebuilt']) == 2
    assert result['settings']['weights'] == str(out / 'model.pth') and 'weights' not in first['settings']
    r = run('eval', tmp_path / 'tuned' / 'model.pth', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['metrics'] == pytest.approx(result['metrics'], abs=1e-6)
    images = tmp_path / 'images'
    images.mkdir()
    from PIL import Image
    Image.new('RGB', (120, 90), (200, 100, 50)).save(images / 'a.png')
    _, written = predict_json(tmp_path / 'tuned' / 'model.pth', images, tmp_path / 'predicted', home=home)
    assert len(written['images']) == 1 and written['vocab'] == vocab


def test_weights_of_another_arch_are_refused_by_name(trained, home, tmp_path):
    r = run('train', *TINY_TRAIN, '--arch', 'fcos', '--weights', trained[0] / 'model.pth', '--out', tmp_path / 'x',
            '--json', env_home=home)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    error = json.loads(r.stdout.strip().splitlines()[-1])
    assert error['error'] == 'PretrainedWeightsError' and 'is a gfl checkpoint (visionnb), not a fcos' in error['message']
    r = run('train', '--pretrained', 'a.pth', '--weights', 'b.pth', '--json')
    assert r.returncode == 2 and 'not allowed with argument --pretrained' in json.loads(r.stdout)['message']


@pytest.fixture(scope='module')
def open_model(trained, tmp_path_factory):
    "The trained model with its postprocess threshold at 0 (it travels in the export): every image has detections, whatever the CPU."
    model = load_detector(trained[0] / 'model.pth')
    model.score_thresh = 0.
    return export_detector(model, tmp_path_factory.mktemp('open') / 'open.pth')


def predict_json(model_file, images, out, *args, home):
    r = run('predict', model_file, images, '--out', out, '--json', *args, env_home=home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), json.loads((out / 'predictions.json').read_text())


def test_predict_on_a_folder(open_model, home, tmp_path):
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    sizes = {}
    for i, (w, h) in enumerate([(150, 100), (90, 160), (128, 128)]):   # not the training size: boxes must come back in these pixels
        src = sorted((home / 'shapes-tiny-seed0' / 'images').rglob('*.png'))[i]
        Image.open(src).convert('RGB').resize((w, h)).save(images / f'img{i}.jpg')
        sizes[f'img{i}.jpg'] = (h, w)
    printed, written = predict_json(open_model, images, tmp_path / 'all', '--score-thresh', '0', home=home)
    assert written['images'] == printed['detections'] and len(written['images']) == 3
    assert sorted(p.name for p in (tmp_path / 'all').glob('*.png')) == ['img0.png', 'img1.png', 'img2.png']
    for d in written['images']:
        h, w = sizes[Path(d['file']).name]
        assert (d['height'], d['width']) == (h, w) and len(d['boxes']) > 0
        assert len(d['boxes']) == len(d['scores']) == len(d['names']) == len(d['labels'])
        assert all(0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h for x1, y1, x2, y2 in d['boxes'])
        assert set(d['names']) <= set(written['vocab']) and Path(d['png']).stat().st_size > 5_000
    # a threshold taken from the model's own scores keeps exactly the detections at or above it, whatever the scores are
    scores = sorted(set(s for d in written['images'] for s in d['scores']))
    thresh = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2   # between two scores: rounding in the json cannot move one across
    _, kept = predict_json(open_model, images, tmp_path / 'kept', '--score-thresh', str(thresh), home=home)
    assert kept['score_thresh'] == thresh
    for every, some in zip(written['images'], kept['images']):
        above = [(b, s, n) for b, s, n in zip(every['boxes'], every['scores'], every['names']) if s >= thresh]
        assert list(zip(some['boxes'], some['scores'], some['names'])) == above
    assert 0 < sum(len(d['scores']) for d in kept['images']) < sum(len(d['scores']) for d in written['images'])


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


def test_predict_skips_an_unreadable_image_and_keeps_the_others(open_model, home, tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    for i, src in enumerate(sorted((home / 'shapes-tiny-seed0' / 'images' / 'valid').glob('*.png'))[:2]):
        (images / f'good{i}.png').write_bytes(src.read_bytes())
    (images / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)   # a PNG signature and nothing readable after it
    r = run('predict', open_model, images, '--score-thresh', '0', '--bs', '8', '--out', tmp_path / 'out', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result['images'], result['predicted']) == (3, 2)
    assert [Path(s['file']).name for s in result['skipped']] == ['broken.png'] and 'broken.png' in result['skipped'][0]['error']
    assert 'broken.png' in r.stderr and 'Traceback' not in r.stderr
    written = json.loads((tmp_path / 'out' / 'predictions.json').read_text())
    assert [Path(d['file']).name for d in written['images']] == ['good0.png', 'good1.png'] and written['skipped'] == result['skipped']
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.png')) == ['good0.png', 'good1.png']
    # the good images of the failed batch get the detections they get alone
    _, alone = predict_json(open_model, images / 'good1.png', tmp_path / 'alone', '--score-thresh', '0', home=home)
    assert alone['images'][0]['boxes'] == written['images'][1]['boxes']


def test_predict_with_no_readable_image_fails_with_a_json_error(open_model, home, tmp_path):
    (tmp_path / 'broken.jpg').write_bytes(b'not a jpeg')
    r = run('predict', open_model, tmp_path / 'broken.jpg', '--out', tmp_path / 'out', '--json', env_home=home)
    assert r.returncode == 1 and 'none of the 1 images could be read' in json.loads(r.stdout)['message']


def test_a_failed_export_check_leaves_no_onnx_file(trained, home, tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'images' / 'broken.jpg').write_bytes(b'not a jpeg')
    out = tmp_path / 'model.onnx'
    r = run('export', trained[0] / 'model.pth', '--out', out, '--check', tmp_path / 'images', '--json', env_home=home)
    assert r.returncode == 1 and 'broken.jpg' in json.loads(r.stdout)['message'] and 'Traceback' not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['images'], 'neither the .onnx nor its temporary file is left'


def test_a_usage_error_with_json_is_a_json_object():
    r = run('train', '--size', 'big', '--json')
    assert r.returncode == 2 and r.stderr == ''
    error = json.loads(r.stdout)
    assert error['error'] == 'UsageError' and "argument --size: invalid int value: 'big'" in error['message']
    assert 'usage: visionnb train' in run('train', '--size', 'big').stderr   # without --json: argparse's usage and message


def test_an_unexpected_error_is_a_json_object_and_a_traceback(monkeypatch, capsys):
    from visionnb import cli
    def broken(args): raise RuntimeError('a bug')
    monkeypatch.setattr(cli, 'cmd_shapes', broken)
    assert cli.main(['shapes', '--json']) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == dict(error='RuntimeError', message='a bug', internal=True)
    assert 'Traceback' in err and 'RuntimeError: a bug' in err
    assert cli.main(['shapes']) == 1
    assert 'visionnb shapes: internal error (please report it with the traceback above): RuntimeError: a bug' in capsys.readouterr().err


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
    # one epoch leaves scores and mask probabilities under the thresholds, by how much depends on the CPU: at 0 every candidate is
    # an instance whatever the training gave, and the thresholds travel in the export (its postprocess settings)
    model = load_detector(out / 'model.pth')
    model.score_thresh = model.update_thresh = model.mask_thresh = 0.
    export_detector(model, tmp_path / 'open.pth')
    image = shapes_records('tiny', 'valid')[0].file
    r = run('predict', tmp_path / 'open.pth', image, '--score-thresh', '0', '--out', tmp_path / 'pred', '--json', env_home=home)
    assert r.returncode == 0, r.stderr
    found = json.loads((tmp_path / 'pred' / 'predictions.json').read_text())['images'][0]
    assert len(found['segmentations']) == len(found['boxes']) > 0
    assert all(s['size'] == [found['height'], found['width']] for s in found['segmentations'])
