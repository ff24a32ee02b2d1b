"""register_into: the Mixer in a host framework's registry with PASSL v1's interface."""
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.hosts import register_into

from conftest import TINY_BACKBONE


class StandInRegistry:
    """PASSL v1's Registry (passl/utils/registry.py), reduced to its interface: register() as a
    decorator or register(obj[, name]), get(name) raising KeyError, and duplicates refused."""

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj):
        assert name not in self._obj_map, f"'{name}' already registered in '{self._name}'"
        self._obj_map[name] = obj

    def register(self, obj=None, name=None):
        if obj is None:
            def deco(func_or_class, name=name):
                self._do_register(name or func_or_class.__name__, func_or_class)
                return func_or_class
            return deco
        self._do_register(name or obj.__name__, obj)

    def get(self, name):
        ret = self._obj_map.get(name)
        if ret is None:
            raise KeyError(f"No object named '{name}' found in '{self._name}' registry!")
        return ret


def build_from_config(cfg, registry):
    """How a PASSL v1 host builds from its registry."""
    args = dict(cfg)
    return registry.get(args.pop("name"))(**args)


def test_host_registry_finds_and_builds_the_mixer():
    backbones = StandInRegistry("BACKBONE")

    @backbones.register()
    class HostNet(paddle.nn.Layer):  # the host's own entries stay untouched
        pass

    assert register_into(backbones) == list(pm.BACKBONES.keys())
    assert backbones.get("MlpMixer") is pm.MlpMixer and backbones.get("HostNet") is HostNet
    model = build_from_config(TINY_BACKBONE, backbones)
    assert model(paddle.randn([2, 3, 16, 16])).shape == [2, 32]
    assert register_into(backbones) == list(pm.BACKBONES.keys())  # again: a no-op


def test_heads_and_prefixes():
    heads = StandInRegistry("HEAD")
    assert register_into(heads, kind="head", names=["LinearClsHead"]) == ["LinearClsHead"]
    head = build_from_config({"name": "LinearClsHead", "num_classes": 3, "in_channels": 8}, heads)
    assert head(paddle.randn([2, 8])).shape == [2, 3]

    taken = StandInRegistry("BACKBONE")
    taken.register(type("MlpMixer", (), {}))  # the host has its own MlpMixer
    with pytest.raises(pm.RegistryError, match="prefix"):
        register_into(taken, names=["MlpMixer"])
    assert register_into(taken, names=["MlpMixer"], prefix="PM") == ["PMMlpMixer"]
    assert taken.get("PMMlpMixer") is pm.MlpMixer


def test_this_packages_registry_is_a_host_too():
    host = pm.Registry("host")
    register_into(host, kind="neck")
    assert host.get("MLPNeck") is pm.NECKS.get("MLPNeck")


def test_unknown_kind_or_name():
    with pytest.raises(pm.ConfigError, match="kind"):
        register_into(StandInRegistry("X"), kind="optimizer")
    with pytest.raises(pm.RegistryError, match="MlpMixer"):
        register_into(StandInRegistry("X"), names=["MlpMixr"])
