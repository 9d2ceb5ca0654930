import pytest

from medm2g.registry import IntensityConvention, ModalityKind, ModalitySpec

HU = IntensityConvention(unit="HU", window=(-1000, 1000))


def image_spec(**changes):
    fields = dict(name="pet", kind="volume", description="PET", channels=1, image_size=(64, 64),
                  latent_shape=(4, 16, 16), intensity=HU, file_suffixes=(".npy",))
    fields.update(changes)
    return ModalitySpec(**fields)


def test_a_valid_spec_derives_its_downsample_factor_and_sample_shape():
    spec = image_spec()
    assert spec.kind is ModalityKind.VOLUME
    assert spec.downsample_factor == 4
    assert spec.sample_shape() == (1, 64, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "PET"}, "lowercase identifier"),
        ({"name": "pet scan"}, "lowercase identifier"),
        ({"kind": "video"}, "'video' is not a valid ModalityKind"),
        ({"channels": None}, "needs channels >= 1"),
        ({"image_size": (64,)}, "image_size must be (height, width)"),
        ({"latent_shape": (4, 16)}, "latent_shape must be (channels, height, width)"),
        ({"latent_shape": (4, 24, 24)}, "by a power of two on every axis"),
        ({"latent_shape": (4, 0, 16)}, "positive ints"),
        ({"intensity": None}, "needs an intensity convention"),
        ({"file_suffixes": ("npy",)}, "start with '.'"),
    ],
)
def test_an_invalid_spec_says_what_is_wrong(changes, message):
    with pytest.raises(ValueError) as error:
        image_spec(**changes)
    assert message in str(error.value)


def test_text_specs_have_no_grid():
    spec = ModalitySpec(name="report", kind="text", description="t", latent_shape=(768, 1, 1))
    assert spec.sample_shape() == ()
    with pytest.raises(ValueError, match="no channels or image_size"):
        ModalitySpec(name="report", kind="text", description="t", latent_shape=(768, 1, 1), channels=1)
    with pytest.raises(ValueError, match=r"text latent is \(width, 1, 1\)"):
        ModalitySpec(name="report", kind="text", description="t", latent_shape=(768, 2, 1))


def test_intensity_window_must_be_ordered():
    with pytest.raises(ValueError, match="low < high"):
        IntensityConvention(unit="HU", window=(100, -100))


def test_named_display_windows_map_into_the_models_range_and_unknown_names_are_refused():
    intensity = IntensityConvention(unit="HU", window=(-100, 200),
                                    display_presets={"brain": (0, 80), "bone": [-500, 1300]})
    assert intensity.display_presets == (("brain", (0.0, 80.0)), ("bone", (-500.0, 1300.0)))  # hashable, ordered
    assert intensity.display_range("brain") == pytest.approx((-1 / 3, 1 / 5))
    assert intensity.display_range("bone") == pytest.approx((-11 / 3, 25 / 3))  # past the window: saturates
    assert intensity.with_window((-1000, 1000)).display_presets == intensity.display_presets
    hash(intensity)
    with pytest.raises(ValueError, match=r"unknown display window 'lung' for HU images \(named windows: brain, bone\)"):
        intensity.display_range("lung")
    with pytest.raises(ValueError, match=r"display_presets\['brain'\] must be \(low, high\) with low < high"):
        IntensityConvention(unit="HU", window=(-100, 200), display_presets={"brain": (80, 0)})
