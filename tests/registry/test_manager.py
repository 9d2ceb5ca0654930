"""Loading and validating plugins: every broken plugin gives an error naming it."""

import types

import pytest

from medm2g.core.errors import PluginError
from medm2g.registry import MODALITY_HOOKS, IntensityConvention, ModalitySpec, hookimpl, load_modalities
from medm2g.registry.hookspecs import OPTIONAL_HOOKS


def make_plugin(name="pet", module_name="toy_pet", kind="volume", skip=(), extra=None, spec_fields=None):
    """A module-shaped plugin implementing every modality hook except those in ``skip``."""
    module = types.ModuleType(module_name)
    fields = dict(name=name, kind=kind, description="toy", latent_shape=(4, 8, 8))
    if kind != "text":
        fields.update(channels=1, image_size=(32, 32), intensity=IntensityConvention(unit="SUV", window=(0, 10)))
    else:
        fields["latent_shape"] = (16, 1, 1)
    fields.update(spec_fields or {})

    implementations = {
        "medm2g_modality_spec": lambda: ModalitySpec(**fields),
        "medm2g_prompt_encoder": lambda spec, size, embed_dim: ("encoder", spec.name, size, embed_dim),
        "medm2g_vae": lambda spec, size: ("vae", spec.name),
        "medm2g_unet": lambda spec, size, context_dim: ("unet", context_dim),
        "medm2g_augmentation": lambda spec: "augmentation",
        "medm2g_read": lambda spec, path: ("read", path.name),
        "medm2g_write": lambda spec, sample, path: path,
    }
    for hook, function in {**implementations, **(extra or {})}.items():
        if hook not in skip:
            setattr(module, hook, hookimpl(function))
    return module


def test_built_in_modalities_load_through_entry_points(installed):
    assert {"text", "xray", "ct", "mri"} <= set(installed)
    assert installed["ct"].source.distribution == "medm2g"
    assert installed["text"].spec.kind.value == "text"


def test_hooks_are_called_on_the_one_plugin_that_owns_the_modality():
    registry = load_modalities([make_plugin("pet"), make_plugin("spect", module_name="toy_spect")], entry_points=False)
    assert registry["pet"].prompt_encoder("tiny", 32) == ("encoder", "pet", "tiny", 32)
    assert registry["spect"].prompt_encoder("cpu", 8) == ("encoder", "spect", "cpu", 8)
    assert registry["pet"].unet("tiny", 48) == ("unet", 48)
    assert registry["spect"].read("scan.npy") == ("read", "scan.npy")


@pytest.mark.parametrize("hook", sorted(set(MODALITY_HOOKS) - {"medm2g_modality_spec"} - OPTIONAL_HOOKS))
def test_a_plugin_missing_a_required_hook_is_named(hook):
    with pytest.raises(PluginError) as error:
        load_modalities([make_plugin(skip={hook})], entry_points=False)
    assert "'toy_pet'" in str(error.value)
    assert f"lacks required hook(s): {hook}" in str(error.value)


def test_optional_hooks_may_be_left_out_and_then_answer_none():
    registry = load_modalities([make_plugin(skip=OPTIONAL_HOOKS)], entry_points=False)
    assert registry["pet"].phantom_render(subject=None, generator=None) is None


def test_text_modalities_need_no_augmentation():
    registry = load_modalities([make_plugin("notes", kind="text", skip={"medm2g_augmentation"})], entry_points=False)
    with pytest.raises(PluginError, match="no visual augmentations"):
        registry["notes"].augmentation()


def test_a_misspelled_hook_is_an_error_with_a_suggestion():
    plugin = make_plugin(extra={"medm2g_vea": lambda spec, size: None})
    with pytest.raises(PluginError) as error:
        load_modalities([plugin], entry_points=False)
    message = str(error.value)
    assert "'toy_pet'" in message and "unknown hook 'medm2g_vea'" in message and "did you mean 'medm2g_vae'" in message


def test_an_implementation_with_an_argument_the_spec_lacks_is_named():
    plugin = make_plugin(extra={"medm2g_vae": lambda spec, size, colour: None})
    with pytest.raises(PluginError) as error:
        load_modalities([plugin], entry_points=False)
    message = str(error.value)
    assert message.startswith("plugin 'toy_pet' (registered directly): hookimpl definition: <lambda>(spec, size, colour)")
    assert "{'colour'} are declared in the hookimpl but can not be found in the hookspec" in message
    assert "\n" not in message


def test_two_plugins_claiming_one_name_are_both_named(installed):
    with pytest.raises(PluginError) as error:
        load_modalities([make_plugin("ct", module_name="my_ct")])
    message = str(error.value)
    assert "two plugins claim modality 'ct'" in message
    assert "'ct' from medm2g" in message and "'my_ct'" in message


def test_an_invalid_spec_is_reported_with_the_plugin_name():
    plugin = make_plugin(spec_fields={"latent_shape": (4, 9, 9)})
    with pytest.raises(PluginError) as error:
        load_modalities([plugin], entry_points=False)
    assert "plugin 'toy_pet' (registered directly): medm2g_modality_spec returned an invalid spec" in str(error.value)
    assert "power of two" in str(error.value)


def test_a_spec_hook_returning_something_else_is_reported():
    plugin = make_plugin(extra={"medm2g_modality_spec": lambda: {"name": "pet"}})
    with pytest.raises(PluginError, match="must return a ModalitySpec, got dict"):
        load_modalities([plugin], entry_points=False)


def test_unknown_modality_lookup_suggests_and_lists_installed(installed):
    with pytest.raises(PluginError) as error:
        installed["cta"]
    assert "unknown modality 'cta' (did you mean 'ct'? installed: ct, mri, " in str(error.value)


def test_an_entry_point_that_fails_to_import_is_named(monkeypatch):
    import importlib.metadata

    class BrokenEntryPoint:
        name, value, dist = "broken", "medm2g_broken.plugin", None

        def load(self):
            raise ImportError("No module named 'medm2g_broken'")

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [BrokenEntryPoint()])
    with pytest.raises(PluginError, match="'broken' .*'medm2g_broken.plugin' failed to import: ImportError"):
        load_modalities()
