"""GPU check of the feature stages: layer_outputs (bf16, CUDA) vs CPU fp32 on a tiny random Llama; TopK SAE on CUDA.

    python3 tools/gpu_check_features.py      # from the repository root, on a machine with a CUDA GPU

polars is stubbed when missing (a bare GPU image lacks it; these functions do not use it at run time).
"""
import sys, time, unittest.mock
try:
    import polars  # noqa: F401
except ImportError:
    sys.modules["polars"] = unittest.mock.MagicMock()
sys.path.insert(0, "lib")
import torch, transformers
from introspect.groundtruth.activations import layer_outputs
from introspect.groundtruth.sae import SAESettings, train_topk, sae_stats
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
cfg = transformers.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=6,
                               num_attention_heads=4, num_key_value_heads=2)
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(cfg).eval()
seqs = [list(torch.randint(1, 1000, (n,)).tolist()) for n in (50, 37, 64, 12)]
cpu = layer_outputs(model, seqs, [1, 3], batch_size=2, progress=False)
gpu_model = model.to("cuda", torch.bfloat16)
gpu = layer_outputs(gpu_model, seqs, [1, 3], batch_size=4, progress=False)
for layer in (1, 3):
    err = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(cpu[layer], gpu[layer]))
    print(f"layer {layer}: max relative difference CUDA bf16 vs CPU fp32 = {err:.4f}")
    assert err < 0.05, err
# throughput on CUDA, bf16, 256 sequences of 256 tokens
long = [list(torch.randint(1, 1000, (256,)).tolist()) for _ in range(256)]
torch.cuda.synchronize(); t = time.perf_counter()
layer_outputs(gpu_model, long, [3], batch_size=64, progress=False)
torch.cuda.synchronize(); print(f"cache throughput (tiny model): {256*256/(time.perf_counter()-t):.0f} tokens/s")
# TopK SAE on CUDA
gen = torch.Generator().manual_seed(0)
dirs = torch.nn.functional.normalize(torch.randn(512, 128, generator=gen), dim=1)
idx = torch.randint(0, 512, (60000, 4), generator=gen)
x = (dirs[idx] * torch.rand(60000, 4, 1, generator=gen)).sum(1).half()
t = time.perf_counter()
sae, hist = train_topk(x[:50000], SAESettings(expansion=8, k=8, epochs=4, batch_size=1024, lr=2e-3), progress=False, device="cuda")
print(f"SAE on CUDA: {time.perf_counter()-t:.1f} s, losses {[round(h,3) for h in hist]}")
stats = sae_stats(sae, x[50000:])
print("held-out", stats)
assert stats["fvu"] < 0.3
print("GPU CHECK OK")
