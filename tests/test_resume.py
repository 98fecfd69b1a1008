"""A `visionnb train` killed with SIGKILL and restarted with --resume ends with the weights of a run that was never interrupted, bit for bit."""
import json, os, signal, subprocess, time
import pytest
import torch

TRAIN = ['train', '--shapes-size', 'tiny', '--epochs', '8', '--size', '128', '--bs', '8', '--channels', '32', '--convs', '1',
         '--arch', 'fcos', '--precision', 'fp32', '--schedule', 'warmup-cosine', '--warmup', '0.2', '--ema', '0.99', '--clip', '10', '--json']

def command(out, *extra): return ['visionnb', *TRAIN, '--out', str(out), *extra]

def environment(): return dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg')

def weights(model_file):
    state = torch.load(model_file, weights_only=True)
    return state['state_dict']

def test_killed_training_resumes_bit_exact(tmp_path):
    whole = subprocess.run(command(tmp_path/'whole'), capture_output=True, text=True, env=environment(), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = subprocess.Popen(command(tmp_path/'cut'), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment())
    last = tmp_path/'cut'/'checkpoints'/'last.pth'
    deadline = time.time() + 300
    while not last.exists() and cut.poll() is None and time.time() < deadline: time.sleep(0.01)
    cut.send_signal(signal.SIGKILL)   # mid-training: a checkpoint exists, the run has epochs left
    assert cut.wait() == -signal.SIGKILL
    assert not (tmp_path/'cut'/'model.pth').exists()
    done_epoch = torch.load(last, weights_only=True)['epoch']
    assert done_epoch < 7
    resumed = subprocess.run(command(tmp_path/'cut', '--resume'), capture_output=True, text=True, env=environment(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result['checkpoints']['resumed_from_epoch'] >= done_epoch
    a, b = weights(tmp_path/'whole'/'model.pth'), weights(tmp_path/'cut'/'model.pth')
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    whole_result = json.loads(whole.stdout.strip().splitlines()[-1])
    assert result['history'] == whole_result['history']
    assert result['metrics'] == whole_result['metrics']

@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    "The folder of a finished run, whose checkpoints the tests below try to continue."
    out = tmp_path_factory.mktemp('finished')/'run'
    first = subprocess.run(command(out), capture_output=True, text=True, env=environment(), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    return out

def refusal(*args) -> str:
    "The error message of a refused `--resume`."
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=environment(), timeout=600)
    assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])['message']

def changed(out, flag, value) -> list:
    "The command of the finished run with `--resume` and `flag` set to `value`."
    args = command(out, '--resume')
    if flag not in args: return args + [flag, value]
    return args[:args.index(flag) + 1] + [value] + args[args.index(flag) + 2:]

def test_resume_refuses_a_checkpoint_of_another_length(finished):
    assert 'last.pth: written by a fit of 8 epochs, this fit has 9' in refusal(*changed(finished, '--epochs', '9'))

@pytest.mark.parametrize('flag, value, named', [('--lr', '0.02', 'lr: 0.01 -> 0.02'), ('--size', '96', 'size: 128 -> 96'),
                                                ('--arch', 'gfl', "arch: 'fcos' -> 'gfl'")])
def test_resume_refuses_other_settings_naming_them(finished, flag, value, named):
    message = refusal(*changed(finished, flag, value))
    assert 'last.pth: written by a training with other settings' in message and named in message, message

def test_resume_removes_the_temporary_files_of_killed_writes(finished):
    planted = [finished/'checkpoints'/'.last.pth.x8k2.partial', finished/'.metrics.tmp.json', finished/'.model.pth.99.tmp']
    for path in planted: path.write_bytes(b'\0' * 1000)
    done = subprocess.run(command(finished, '--resume'), capture_output=True, text=True, env=environment(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(result['checkpoints']['removed_temporaries']) == sorted(map(str, planted))
    assert not any(path.exists() for path in planted) and (finished/'model.pth').exists()
