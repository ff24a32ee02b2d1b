"""Discoverable: every tool's --help ends with usage examples; tools/list.py and
passl_mixer.list_models()/list_variants()/list_configs() name what can be built; importing
passl_mixer without Paddle says how to install it."""
import glob
import os
import subprocess
import sys

import passl_mixer as pm
from conftest import ROOT

TOOLS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tools", "*.py")))


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def test_every_tool_help_shows_usage_examples():
    procs = {name: subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", name), "--help"],
                                    env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name in TOOLS}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err)
        usage, _, rest = out.partition("options:")
        # the examples come after the options, as the docstring has them
        assert f"python tools/{name}" in rest, (name, out)


def test_list_tool_names_models_variants_and_configs():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "list.py")], env=env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    for word in ("ImageClassifier", "MoCoV3", "BYOL", "MlpMixer", "AdamW", "Cosine",
                 "ImageFolder", "b16", "hidden_dim 768", "configs/demo/mixer_digits.yaml"):
        assert word in proc.stdout, word
    for family in pm.list_variants():  # every family's variants table
        assert f"{family} variants (backbone: {{name: {family}, arch: ARCH}}):" in proc.stdout
    plain = [name for name in pm.list_models()["backbones"] if name not in pm.list_variants()]
    if plain:  # FNet: dimensions only
        assert f"backbones without named variants (give their dimensions): {', '.join(plain)}" \
            in proc.stdout
    assert "_base_" not in proc.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "list.py"), "modles"],
                         env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "choose from models, variants, configs" in bad.stderr


def test_list_functions():
    models = pm.list_models()
    assert {"ImageClassifier", "MoCoV3", "BYOL"} <= set(models["models"])
    assert "MlpMixer" in models["backbones"] and "AdamW" in models["optimizers"]
    variants = pm.list_variants()  # {family: {arch: dims}} of the families with an ARCHS table
    assert {"MlpMixer", "GMLP", "ResMLP"} <= set(variants) <= set(models["backbones"])
    assert variants["MlpMixer"]["b16"]["hidden_dim"] == 768
    for family, archs in variants.items():
        cls = pm.BACKBONES.get(family)
        assert archs == cls.ARCHS and archs is not cls.ARCHS  # a copy: callers may change it
    configs = pm.list_configs()
    assert "configs/demo/mixer_digits.yaml" in configs
    assert all(os.path.isfile(os.path.join(ROOT, c)) and "_base_" not in c for c in configs)


def test_import_without_paddle_says_how_to_install_it():
    code = "import sys; sys.modules['paddle'] = None; import passl_mixer"
    proc = subprocess.run([sys.executable, "-c", code], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()
    assert "ImportError: passl-mixer needs PaddlePaddle" in proc.stderr
    assert "python -m pip install paddlepaddle" in proc.stderr
    assert "paddlepaddle-gpu" in proc.stderr and "ModuleNotFoundError" not in proc.stderr, last
