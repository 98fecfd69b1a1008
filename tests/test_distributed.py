"""Distributed data-parallel training with 2 gloo processes on the CPU (torchrun), against one process with the same global batch."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch

JOB = Path(__file__).with_name('ddp_job.py')

def run_job(out, *args, nproc=1):
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc-per-node={nproc}'] if nproc > 1 else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run(launcher + [str(JOB), args[0], str(out), *args[1:]], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((Path(out)/'metrics.json').read_text())

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    one = run_job(root/'one', 'train', '--bs', '16')
    two = run_job(root/'two', 'train', '--bs', '8', nproc=2)
    return root, one, two

def test_two_processes_train_like_one_with_the_same_global_batch(trained):
    root, one, two = trained
    assert one['global_batch'] == two['global_batch'] == 16
    # same images per step, same loss normalisers (batch_normalizer), frozen BatchNorm statistics: only the order of float sums differs
    assert two['valid_loss'] == pytest.approx(one['valid_loss'], rel=5e-3)
    assert two['AP50'] == pytest.approx(one['AP50'], abs=2e-3)
    a, b = (torch.load(root/name/'weights.pth', weights_only=True) for name in ('one', 'two'))
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-2

def test_distributed_evaluation_equals_single_process_evaluation(trained):
    root, one, _ = trained
    weights = str(root/'one'/'weights.pth')
    single = run_job(root/'eval1', 'eval', '--bs', '16', '--weights', weights)
    double = run_job(root/'eval2', 'eval', '--bs', '8', '--weights', weights, nproc=2)
    assert single['AP50'] > 0   # a trained model: the comparison is not of two empty results
    for key in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl'): assert double[key] == single[key], key
    assert double['valid_loss'] == pytest.approx(single['valid_loss'], rel=1e-6)   # a sum over processes: float order differs

def test_cli_trains_on_two_processes(tmp_path):
    out = tmp_path/'run'
    done = subprocess.run(['visionnb', 'train', '--nproc', '2', '--shapes-size', 'tiny', '--epochs', '2', '--size', '128',
                           '--bs', '4', '--channels', '32', '--convs', '1', '--arch', 'fcos', '--precision', 'fp32', '--out', str(out), '--json'],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg'), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out/'metrics.json').read_text())
    assert result['settings']['processes'] == 2
    assert (out/'model.pth').exists() and (out/'checkpoints'/'last.pth').exists()
    assert len(result['history']) == 2
