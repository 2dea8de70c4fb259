"""Generator families (plain ``nn.Module``s), their configs, and the registry that builds them:
:mod:`aigc_synth.models.registry` (``FAMILIES``, ``build_generator``, ``build_discriminator``)."""
