"""A small detector training or evaluation for tests/test_distributed.py, run by `torchrun` (N processes) or by `python` (one)."""
import argparse, json
from pathlib import Path
import torch
from fastai.torch_core import set_seed, rank_distrib
from visionnb.callbacks.distributed import DistributedCallback, setup_distributed, teardown_distributed, global_batch_size
from visionnb.data.loaders import det_dls
from visionnb.data.shapes import shapes_records
from visionnb.learner.det import det_learner

def main():
    p = argparse.ArgumentParser()
    p.add_argument('mode', choices=('train', 'eval'))
    p.add_argument('out')
    p.add_argument('--bs', type=int, default=16)
    p.add_argument('--val-bs', type=int, default=2)
    p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--data', default='tiny')
    p.add_argument('--weights', default=None)
    p.add_argument('--train-bn', action='store_true', help='BatchNorm statistics move in training (frozen by default)')
    args = p.parse_args()
    setup_distributed()
    torch.set_num_threads(1)
    set_seed(0, reproducible=True)
    train, valid = shapes_records(args.data, 'train'), shapes_records(args.data, 'valid')
    # no augmentation and (unless --train-bn) frozen BatchNorm statistics: the two things that differ between N processes and one by design
    dls = det_dls(train, valid, size=128, bs=args.bs, val_bs=args.val_bs, augment=False)
    learn = det_learner(dls, 'fcos', 'resnet18', precision='fp32', cbs=DistributedCallback(),
                        model_kwargs=dict(channels=32, num_convs=1, score_thresh=0.05,
                                          backbone_kwargs=dict(channels=(16, 32, 64, 128), norm_eval=not args.train_bn)))
    with learn.no_bar(), learn.no_logging():
        if args.mode == 'train':
            learn.fit(args.epochs, args.lr)
            names, values = learn.recorder.metric_names[1:-1], learn.recorder.values[-1]
        else:
            learn.model.load_state_dict(torch.load(args.weights, weights_only=True))
            names, values = ['valid_loss'] + [m.name for m in learn.metrics], learn.validate()
    if rank_distrib() == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(learn.model.state_dict(), out/'weights.pth')
        metrics = {k: float(v) for k, v in zip(names, values) if v is not None}
        (out/'metrics.json').write_text(json.dumps(dict(metrics, global_batch=global_batch_size(args.bs))))
    teardown_distributed()

if __name__ == '__main__': main()
