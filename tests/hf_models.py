"""Models of the `transformers` package, built from their configs with random weights (no
downloads), in eval mode, batch 1: the four acceptance models (HiFi-GAN, the wav2vec2 feature
encoder, MobileNetV2, ResNet-18) and three that exercise grouped convs with squeeze-excitation
(RegNetY, group width 8), Snake activations on 1-D convs (the DAC audio codec's encoder) and layer
scale with a `pool(x) - x` token mixer (PoolFormer). Batch-norm running statistics, affine
parameters, Snake alphas and layer scales are set to non-trivial values (a freshly built model has
mean 0, variance 1, alpha 1 and scales of 1e-5, which would hide a wrong fold or a dropped branch). Used by tests/test_models.py, examples/from_torch.py and
benchmarks/bench_models.py."""
from __future__ import annotations

import os
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _randomize_norms(model: Any, seed: int) -> Any:
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                channels = module.num_features
                module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(channels, generator=generator) - 0.5)
    return model.eval()


def hifigan() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.SpeechT5HifiGanConfig(
        model_in_dim=80, upsample_initial_channel=128, upsample_rates=[4, 4, 4, 4],
        upsample_kernel_sizes=[8, 8, 8, 8], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, leaky_relu_slope=0.1, normalize_before=True)
    torch.manual_seed(0)
    model = transformers.SpeechT5HifiGan(config)
    with torch.no_grad():  # the normalization statistics, as a trained vocoder has them
        model.mean.copy_(torch.randn(80) * 0.5)
        model.scale.copy_(torch.rand(80) + 0.5)
    return model.eval(), (torch.randn(1, 64, 80),)


def wav2vec2_feature_encoder() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.Wav2Vec2Config(
        feat_extract_norm="group", conv_bias=False, conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2], feat_extract_activation="gelu")
    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(config).feature_extractor
    with torch.no_grad():
        norm = model.conv_layers[0].layer_norm  # GroupNorm's affine parameters, not ones and zeros
        norm.weight.copy_(torch.rand(norm.num_channels) + 0.5)
        norm.bias.copy_(torch.rand(norm.num_channels) - 0.5)
    return model.eval(), (torch.randn(1, 16000),)


def mobilenet_v2() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.MobileNetV2Config(image_size=224, depth_multiplier=1.0, tf_padding=True,
                                            hidden_act="relu6")
    torch.manual_seed(0)
    return _randomize_norms(transformers.MobileNetV2Model(config), 1), (torch.randn(1, 3, 224, 224),)


def resnet18() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                       embedding_size=64)
    torch.manual_seed(0)
    return _randomize_norms(transformers.ResNetModel(config), 2), (torch.randn(1, 3, 224, 224),)


def regnet_y() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.RegNetConfig(layer_type="y", groups_width=8, hidden_sizes=[32, 64, 160, 384],
                                       depths=[1, 2, 4, 2], embedding_size=32)
    torch.manual_seed(0)
    return _randomize_norms(transformers.RegNetModel(config), 3), (torch.randn(1, 3, 224, 224),)


def dac_encoder() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.DacConfig(encoder_hidden_size=32, downsampling_ratios=[2, 4, 8, 8], hidden_size=512)
    torch.manual_seed(0)
    model = transformers.DacModel(config).encoder
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # Snake's per-channel alpha, as a trained codec has it
        for name, parameter in model.named_parameters():
            if name.endswith("alpha"):
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 1.5 + 0.25)
    return model.eval(), (torch.randn(1, 1, 16000),)


def poolformer() -> tuple[Any, tuple]:
    import torch
    import transformers
    config = transformers.PoolFormerConfig(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 6, 2])
    torch.manual_seed(0)
    model = transformers.PoolFormerModel(config)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # layer scales and group-norm affine parameters away from 1e-5, ones and zeros
        for name, parameter in model.named_parameters():
            if "layer_scale" in name or (name.endswith("weight") and parameter.dim() == 1):
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.5 + 0.25)
            elif name.endswith("bias") and "norm" in name:
                parameter.copy_(torch.rand(parameter.shape, generator=generator) - 0.5)
    return model.eval(), (torch.randn(1, 3, 224, 224),)


MODELS: dict[str, Callable[[], tuple[Any, tuple]]] = {
    "hifigan": hifigan, "wav2vec2_features": wav2vec2_feature_encoder, "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18, "regnet_y": regnet_y, "dac_encoder": dac_encoder, "poolformer": poolformer}
