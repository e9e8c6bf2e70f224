"""A plain PyTorch VAE, written the way the common examples write it, trained like
``vae-course train``: ReLU, Bernoulli decoder (summed binary cross-entropy), PyTorch's
default initialization, torch.optim.Adam 1e-3, batch 128, 50 epochs, on the embedded MNIST
split. It shares no code with the package's models, so its test negative ELBO is an
independent reference for the figures in the README. Two architectures, the course's:

    mlp   784 -> 400 -> L, and back: nn.Linear layers
    conv  nn.Conv2d 1 -> 32 -> 64 (4x4, stride 2, padding 1: 28 -> 14 -> 7), nn.Linear heads
          from the flattened 64x7x7 map; decoder nn.Linear L -> 64x7x7, then
          nn.ConvTranspose2d 64 -> 32 -> 1 (4x4, stride 2, padding 1: 7 -> 14 -> 28) to logits

    python benchmarks/plain_torch_reference.py --latent-dim 20 --seeds 0 1
    python benchmarks/plain_torch_reference.py --architecture conv --seeds 0 1

It runs with one torch thread, the course's default (``--threads N``; 0 leaves torch's
own). The test negative ELBO is one noise draw per test example, as ``vae-course train``
reports it; the seconds are the training time (wall clock; the machine's load changes them,
not the ELBO). ``benchmarks/benchmark.py`` times the same models against the NumPy ones.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("mlp", "conv")


class PlainVAE(nn.Module):
    """784-400-L with ReLU; forward(x (N, 784)) -> logits (N, 784), mu, log_var (N, L)."""

    def __init__(self, latent_dim=20, hidden=400):
        super().__init__()
        self.fc1, self.fc_mu, self.fc_log_var = (
            nn.Linear(784, hidden),
            nn.Linear(hidden, latent_dim),
            nn.Linear(hidden, latent_dim),
        )
        self.fc3, self.fc4 = nn.Linear(latent_dim, hidden), nn.Linear(hidden, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, log_var = self.fc_mu(h), self.fc_log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        return self.fc4(F.relu(self.fc3(z))), mu, log_var


class PlainConvVAE(nn.Module):
    """Conv encoder 1 -> c1 -> c2 (28 -> 14 -> 7), dense heads; dense decoder to c2x7x7 and
    transposed convs c2 -> c1 -> 1 (7 -> 14 -> 28). forward(x (N, 784)) -> logits (N, 784),
    mu, log_var (N, L)."""

    def __init__(self, latent_dim=20, channels=(32, 64)):
        super().__init__()
        c1, c2 = channels
        self.c2 = c2
        self.conv1 = nn.Conv2d(1, c1, 4, stride=2, padding=1)  # 28 -> 14
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)  # 14 -> 7
        self.fc_mu = nn.Linear(c2 * 7 * 7, latent_dim)
        self.fc_log_var = nn.Linear(c2 * 7 * 7, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, c2 * 7 * 7)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)  # 7 -> 14
        self.deconv2 = nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1)  # 14 -> 28

    def forward(self, x):
        h = F.relu(self.conv1(x.view(-1, 1, 28, 28)))
        h = F.relu(self.conv2(h)).flatten(1)
        mu, log_var = self.fc_mu(h), self.fc_log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        h = F.relu(self.fc_dec(z)).view(-1, self.c2, 7, 7)
        return self.deconv2(F.relu(self.deconv1(h))).flatten(1), mu, log_var


def make_model(architecture, latent_dim=20):
    if architecture == "mlp":
        return PlainVAE(latent_dim)
    if architecture == "conv":
        return PlainConvVAE(latent_dim)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")


def negative_elbo_sum(logits, x, mu, log_var):
    """Summed over the batch: binary cross-entropy over pixels plus the analytic KL."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return recon - 0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp())


def run(architecture, latent_dim, seed, epochs=50, batch_size=128):
    """Train one model; return (test negative ELBO in nats per example, training seconds)."""
    from vae_from_scratch.data import load_mnist

    torch.manual_seed(seed)
    ds = load_mnist()
    x_train, x_test = torch.from_numpy(ds.x_train), torch.from_numpy(ds.x_test)
    model = make_model(architecture, latent_dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for first in range(0, len(x_train), batch_size):
            x = x_train[order[first : first + batch_size]]
            logits, mu, log_var = model(x)
            loss = negative_elbo_sum(logits, x, mu, log_var)
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits, mu, log_var = model(x_test)
        return negative_elbo_sum(logits, x_test, mu, log_var).item() / len(x_test), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="mlp")
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, the course's; 0: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for seed in args.seeds:
        nelbo, seconds = run(args.architecture, args.latent_dim, seed, args.epochs)
        print(f"plain PyTorch {args.architecture}, latent {args.latent_dim}, seed {seed}: "
              f"test -ELBO {nelbo:.2f} ({seconds:.1f} s for {args.epochs} epochs, "
              f"{torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main()
