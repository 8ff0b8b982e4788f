#!/usr/bin/env python3
"""Same-machine reference for `thermoflow bench flows`: zuko NSF with the same sizes (8 coupling
transforms via passes=2, conditioner 2x64 tanh, K = 8 bins, bound 5, one context feature).
Needs `pip install torch zuko` (not used by CI). Prints one JSON object."""
import json, time, statistics, torch, zuko
torch.manual_seed(0)
out = {}
for d in (2, 16):
    flow = zuko.flows.NSF(features=d, context=1, transforms=8, bins=8, hidden_features=[64, 64],
                          activation=torch.nn.Tanh, passes=2)
    c = torch.rand(4096, 1) * 2.5 + 0.5
    def sample():
        with torch.no_grad():
            x, lq = flow(c).rsample_and_log_prob()
    for _ in range(3): sample()
    ts = []
    for _ in range(9):
        t0 = time.perf_counter(); sample(); ts.append(time.perf_counter() - t0)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    c2 = c[:1024]
    def step():
        x, lq = flow(c2).rsample_and_log_prob()
        u = 0.5 * (x ** 2).sum(-1)
        loss = (lq + u / c2[:, 0]).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(3): step()
    tt = []
    for _ in range(9):
        t0 = time.perf_counter(); step(); tt.append(time.perf_counter() - t0)
    out[f"rqs_d{d}"] = {"sample_log_prob_per_s": 4096 / statistics.median(ts), "train_steps_per_s": 1 / statistics.median(tt),
                        "n_params": sum(p.numel() for p in flow.parameters())}
print(json.dumps({"zuko": zuko.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(), **out}))
