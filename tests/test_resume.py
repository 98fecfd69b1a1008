"""A `visionnb train` killed with SIGKILL and restarted with --resume ends with the weights of a run that was never interrupted, bit for bit."""
import json, os, signal, subprocess, time
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

def test_resume_refuses_a_checkpoint_of_another_length(tmp_path):
    first = subprocess.run(command(tmp_path/'run'), capture_output=True, text=True, env=environment(), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    other = [c if c != '8' else '9' for c in command(tmp_path/'run', '--resume')]
    again = subprocess.run(other, capture_output=True, text=True, env=environment(), timeout=600)
    assert again.returncode == 1
    message = json.loads(again.stdout.strip().splitlines()[-1])['message']
    assert 'last.pth: written by a fit of 8 epochs, this fit has 9' in message
