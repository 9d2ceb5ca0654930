"""Loading and validating plugins: every broken plugin gives an error naming it."""

import types

import attrs
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


class WrapsEveryVAE:
    """A plugin that provides no modality: a new-style wrapper (``wrapper=True``) around every
    modality's VAE hook, changing the result, and an old-style one (``hookwrapper=True``) around
    ``medm2g_read``, observing which modality answered."""

    def __init__(self):
        self.reads = []

    @hookimpl(wrapper=True)
    def medm2g_vae(self, spec, size):
        vae = yield
        return ("wrapped", vae)

    @hookimpl(hookwrapper=True)
    def medm2g_read(self, spec, path):
        outcome = yield
        self.reads.append((spec.name, outcome.get_result()))


def test_hook_wrappers_of_another_plugin_wrap_each_modalitys_call():
    wrapper = WrapsEveryVAE()
    registry = load_modalities([make_plugin("pet"), make_plugin("spect", module_name="toy_spect"), wrapper],
                               entry_points=False)
    assert set(registry) == {"pet", "spect"}  # a wrapper of modality hooks provides no modality
    assert registry["pet"].vae("tiny") == ("wrapped", ("vae", "pet"))
    assert registry["spect"].vae("cpu") == ("wrapped", ("vae", "spect"))
    assert registry["spect"].read("scan.npy") == ("read", "scan.npy")
    assert wrapper.reads == [("spect", ("read", "scan.npy"))]
    assert registry["pet"].unet("tiny", 48) == ("unet", 48)  # hooks nobody wraps answer as before


def test_a_wrapper_of_the_spec_hook_changes_the_spec_before_it_is_validated():
    class Renames:
        @hookimpl(wrapper=True)
        def medm2g_modality_spec(self):
            spec = yield
            return attrs.evolve(spec, description=f"{spec.description} (wrapped)")

    class BreaksTheName:
        @hookimpl(wrapper=True)
        def medm2g_modality_spec(self):
            spec = yield
            return attrs.evolve(spec, name="PET")

    registry = load_modalities([make_plugin("pet"), Renames()], entry_points=False)
    assert registry["pet"].spec.description == "toy (wrapped)"
    with pytest.raises(PluginError, match="lowercase identifier"):
        load_modalities([make_plugin("pet"), BreaksTheName()], entry_points=False)


def test_the_built_in_modalities_are_called_through_the_plugin_manager(installed):
    """The built-in imaging plugins are objects that do not hash (frozen attrs with a dict): they
    still load, and a wrapper registered beside them wraps their hooks."""
    wrapper = WrapsEveryVAE()
    registry = load_modalities([wrapper])
    assert set(registry) == set(installed)
    wrapped, vae = registry["ct"].vae("tiny")
    assert wrapped == "wrapped" and type(vae).__name__ == "ImageVAE"


@attrs.frozen
class UnhashablePlugin:
    """A plugin object pluggy's sets cannot hold (attrs hashes its fields; a dict does not hash)."""

    name: str
    table: dict = attrs.field(factory=dict)

    @hookimpl
    def medm2g_modality_spec(self):
        return ModalitySpec(name=self.name, kind="text", description="toy", latent_shape=(16, 1, 1))

    @hookimpl
    def medm2g_prompt_encoder(self, spec, size, embed_dim):
        return ("encoder", spec.name, embed_dim)

    @hookimpl
    def medm2g_vae(self, spec, size):
        return ("vae", spec.name)

    @hookimpl
    def medm2g_unet(self, spec, size, context_dim):
        return ("unet", context_dim)

    @hookimpl
    def medm2g_read(self, spec, path):
        return ("read", spec.name)

    @hookimpl
    def medm2g_write(self, spec, sample, path, provenance):
        return path


def test_an_unhashable_plugin_object_loads_and_is_called_through_pluggy():
    with pytest.raises(TypeError):
        hash(UnhashablePlugin("notes"))
    wrapper = WrapsEveryVAE()
    registry = load_modalities([UnhashablePlugin("notes"), UnhashablePlugin("memos"), wrapper], entry_points=False)
    assert registry["notes"].prompt_encoder("tiny", 8) == ("encoder", "notes", 8)
    assert registry["memos"].vae("tiny") == ("wrapped", ("vae", "memos"))
    assert registry["memos"].source.plugin_name == "UnhashablePlugin"


def test_two_backends_training_one_stage_kind_are_refused_naming_both():
    from medm2g.registry import BackendSpec

    class First:
        @hookimpl
        def medm2g_backends(self):
            return [BackendSpec(name="first", description="", stage_runners={"fit": lambda run, stage: {}})]

    class Second:
        @hookimpl
        def medm2g_backends(self):
            return [BackendSpec(name="second", description="", stage_runners={"fit": lambda run, stage: {}})]

    with pytest.raises(PluginError, match=r"backend 'second' trains stage kind 'fit', which backend 'first' already"):
        load_modalities([First(), Second()], entry_points=False)
