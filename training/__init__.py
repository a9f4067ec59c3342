"""deepmine.training — PyTorch: LensFlow, EZnet, LensGenerator (GAN), datasets, augmentation, recipes."""
