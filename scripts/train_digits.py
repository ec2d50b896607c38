"""Train the digits CNN shipped with convscope: `python scripts/train_digits.py [--out PATH] [--epochs N]`.

scikit-learn's 8×8 digits, the fixed stratified 75/25 split of ``convscope.zoo.digits.digits_dataset``
(random_state 0), pictures made by the model's own ``preprocess`` (1×32×32), random shifts of up to
2 pixels as augmentation. Seeded and single-threaded, so a run gives the same weights on the same
torch build; about half a minute of one CPU core. Writes safetensors and prints the test accuracy.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convscope.zoo.digits import DigitsCNN, digits_dataset, digits_model, weights_path


def shifted(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each picture moved by a random (dy, dx) in [-max_shift, max_shift], background filled."""
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    h, w = x.shape[-2:]
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    module.eval()
    with torch.inference_mode():
        return float((module(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=weights_path(), help="safetensors file to write")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # reduction order, hence the weights, independent of the machine's cores
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    wrapper = digits_model(weights=None)  # the same preprocess (size, normalization) the shipped model uses
    train, test = digits_dataset("train"), digits_dataset("test")
    x_train, y_train = wrapper.preprocess(train.pictures()), torch.from_numpy(train.targets)
    x_test, y_test = wrapper.preprocess(test.pictures()), torch.from_numpy(test.targets)
    raw = x_train * torch.tensor(wrapper.std) + torch.tensor(wrapper.mean)
    print(f"train {tuple(x_train.shape)} test {tuple(x_test.shape)}; pixel mean {raw.mean():.3f} std {raw.std():.3f} "
          f"(model normalizes with {wrapper.mean}, {wrapper.std})")

    module = DigitsCNN()
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-4)
    batch, steps_per_epoch = 64, math.ceil(len(y_train) / 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        module.train()
        order = torch.randperm(len(y_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(module(shifted(x_train[idx], generator)), y_train[idx], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / len(y_train):.4f}  test accuracy {accuracy(module, x_test, y_test):.4f}")
    module.eval()
    train_acc, test_acc = accuracy(module, x_train, y_train), accuracy(module, x_test, y_test)
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(args.out), metadata={"train_accuracy": f"{train_acc:.4f}", "test_accuracy": f"{test_acc:.4f}",
                                              "epochs": str(args.epochs), "seed": str(args.seed), "torch": torch.__version__})
    print(f"trained in {time.perf_counter() - start:.1f} s; train accuracy {train_acc:.4f}; "
          f"test accuracy {test_acc:.4f} ({len(y_test)} held-out digits); wrote {args.out}")


if __name__ == "__main__":
    main()
