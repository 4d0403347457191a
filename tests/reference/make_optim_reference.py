#!/usr/bin/python3
"""Reference numbers for the optimizers, LR schedulers and gradient clipping, from PyTorch in float64.

Run with Debian's PyTorch:  /usr/bin/python3 tests/reference/make_optim_reference.py
Writes tests/reference/optim_reference.hpp (C++ constants), so the tests need no Python.

Optimizers: three parameters in two groups; at step t every gradient is set to c * p + s[t] * d
(fixed c, d; s shrinks and flips sign so AMSGrad's maximum matters), then optimizer.step().
Recorded: all parameters, concatenated, after each of 3 steps, and the state buffers at the end.
"""
import os
import torch

torch.manual_seed(0)
out = []


def emit(name, values):
    if isinstance(values, torch.Tensor):
        values = values.detach().reshape(-1).tolist()
    vals = ", ".join(repr(float(v)) for v in values)
    out.append(f"inline const std::vector<double> {name} = {{{vals}}};")


def cat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


shapes = [(2, 3), (4,), (3,)]
init = [torch.randn(*s, dtype=torch.float64) for s in shapes]
coef = [torch.rand(*s, dtype=torch.float64) + 0.5 for s in shapes]
shift = [torch.randn(*s, dtype=torch.float64) for s in shapes]
scales = [1.0, 0.3, -0.05]
for i in range(3):
    emit(f"init{i}", init[i]); emit(f"coef{i}", coef[i]); emit(f"shift{i}", shift[i])
emit("scales", scales)


def run(make, buffers):
    params = [t.clone().requires_grad_() for t in init]
    opt = make(params)
    traj = []
    for s in scales:
        with torch.no_grad():
            for p, c, d in zip(params, coef, shift):
                p.grad = c * p + s * d
        opt.step()
        traj.append(cat(params))
    state = [cat([opt.state[p][b] for p in params]) for b in buffers]
    return torch.cat(traj), state


def two_groups(opt_cls, group1, **defaults):
    return lambda ps: opt_cls([{"params": ps[:2]}, dict(params=ps[2:], **group1)], **defaults)


cases = {
    "sgd": (two_groups(torch.optim.SGD, dict(lr=0.02, momentum=0.8, dampening=0.25, nesterov=False,
                                             weight_decay=0.0),
                       lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), ["momentum_buffer"]),
    "adam": (two_groups(torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.9)), lr=0.05),
             ["exp_avg", "exp_avg_sq"]),
    "adamw": (two_groups(torch.optim.AdamW, dict(lr=0.01, weight_decay=0.0), lr=0.05, weight_decay=0.1),
              ["exp_avg", "exp_avg_sq"]),
    "adamw_amsgrad": (two_groups(torch.optim.AdamW, dict(lr=0.02), lr=0.05, weight_decay=0.1,
                                 amsgrad=True, betas=(0.8, 0.5)),
                      ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
}
for name, (make, buffers) in cases.items():
    traj, state = run(make, buffers)
    emit(f"{name}_traj", traj)
    for b, v in zip(buffers, state):
        emit(f"{name}_{b}", v)


# ---- LR schedulers: get_last_lr() after construction and after each step, groups interleaved
def lr_sequence(opt, sched, steps, momentum_key=None):
    lrs, moms = [], []
    for k in range(steps + 1):
        if k > 0:
            opt.step()
            sched.step()
        lrs.extend(sched.get_last_lr())
        if momentum_key == "momentum":
            moms.extend(g["momentum"] for g in opt.param_groups)
        elif momentum_key == "betas":
            moms.extend(g["betas"][0] for g in opt.param_groups)
    return lrs, moms


def sgd_pair(momentum=0.0):
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.02}], lr=0.1, momentum=momentum)


opt = sgd_pair()
emit("steplr", lr_sequence(opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), 20)[0])
opt = sgd_pair()
emit("multisteplr", lr_sequence(opt, torch.optim.lr_scheduler.MultiStepLR(
    opt, milestones=[2, 5, 5, 9], gamma=0.3), 20)[0])
opt = sgd_pair(momentum=0.9)
lrs, moms = lr_sequence(opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[1.0, 0.5], total_steps=20),
                        19, "momentum")
emit("onecycle_lr", lrs); emit("onecycle_momentum", moms)
a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
opt = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.02}], lr=0.1)
lrs, moms = lr_sequence(opt, torch.optim.lr_scheduler.OneCycleLR(
    opt, max_lr=0.3, total_steps=20, pct_start=0.25, anneal_strategy="linear", three_phase=True,
    div_factor=10.0, final_div_factor=100.0), 20, "betas")
emit("onecycle3_lr", lrs); emit("onecycle3_beta1", moms)

# ---- clip_grad_norm_: (max_norm, norm_type) on two gradients
grads = [torch.randn(2, 3, dtype=torch.float64) * 3, torch.randn(4, dtype=torch.float64) * 3]
emit("clip_grad0", grads[0]); emit("clip_grad1", grads[1])
totals, clipped = [], []
for max_norm, norm_type in [(1.0, 2.0), (2.0, 1.0), (0.5, float("inf")), (100.0, 2.0), (3.0, 3.0)]:
    ps = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    totals.append(float(torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type)))
    clipped.append(cat([p.grad for p in ps]))
emit("clip_totals", totals); emit("clip_grads", torch.cat(clipped))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_reference.hpp")
with open(path, "w") as f:
    f.write("// Generated by make_optim_reference.py with PyTorch " + torch.__version__ + "; do not edit.\n")
    f.write("#pragma once\n#include <vector>\n\nnamespace optimref {\n")
    f.write("\n".join(out))
    f.write("\n}  // namespace optimref\n")
print("wrote", path)
