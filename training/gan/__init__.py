"""deepmine.training.gan — GAN lens augmentation (seed 4.3, Figure 3.1): train a LensGenerator against an EZnet
discriminator, pre-trained on negatives and retrained on positives, in cycles of samples.

Procedure (choices the seed leaves open are marked *choice*)
-------------------------------------------------------------
1. **Pre-train** on negatives (generic survey cutouts) for ``pretrain.epochs`` epochs.
2. **Cycles** ``c = 1..cycles.count`` (seed: 10): retrain on positives for
   ``cycles.epochs`` epochs, then draw ``cycles.samples`` cutouts (seed: 200) from the
   generator in eval mode — exactly what its exported ONNX graph computes. The seed overcomes
   mode collapse "by 10 cycles of retraining"; *choice* (``cycles.start``): ``"pretrained"``
   (default) restarts every cycle from the pre-trained generator and discriminator with fresh
   Adam state and its own random stream, so each cycle can settle on different modes;
   ``"continue"`` keeps training one GAN and samples it after every cycle.
   Before sampling, the generator's BatchNorm statistics are recomputed for its final weights
   (``output.calibration_batches`` batches of latent vectors; 0 = off): eval mode uses them,
   and the running averages kept during training lag behind the weights.
3. All samples (seed: 2,000) are written as ``augmented.npy`` — uint8 N×C×H×W percentile-
   normalised cutouts, the scanner's and the trainer's format — with a provenance sidecar.

Each step is standard DCGAN practice (Radford et al. 2015): binary cross-entropy, Adam
(lr 2e-4, β = (0.5, 0.999)) for both networks, one discriminator update then one generator
update (non-saturating loss: the generator's fakes labelled real). The discriminator is the
same :class:`~deepmine.training.eznet.EZnet` as the classifier, with its two-sigmoid loss
(:meth:`EZnet.loss`: real = class 1, fake = class 0). Real images are preprocessed exactly as
for the classifier (:func:`deepmine.inference.preprocess.prepare_batch`, uint8 / 255) and, when
``data.symmetries`` is on, turned by a random symmetry of the square (lens images have no
preferred orientation); the generator's images are mapped to the same 0..1 range
(:meth:`LensGenerator.images`). *Choice* (``data.discriminator_batches``): the seed's fakes
"are bundled with random real images and passed to the discriminator" — ``"bundled"``
(default) scores one concatenated batch, so the discriminator's BatchNorm sees both;
``"separate"`` scores them as two batches (the ganhacks advice).

*Addition* (``data.translate``, default 0.125; 0 = the seed's plain DCGAN): before the
discriminator, real and generated images alike are shifted by a random whole number of pixels
(up to 1/8 of the size, zero fill; DiffAugment, Zhao et al. 2020, the standard remedy for
GANs trained on a few dozen images). EZnet's unpadded first convolution sees a cutout's
outermost pixels through a few kernel positions only (measured: 3-8× smaller gradients on the
border rows), so without the shifts a short training leaves the generator's border grey.

One epoch is one pass over the real images of the phase (every negative, or every positive;
``data.images_per_epoch`` > 0 draws that many instead, with replacement when larger than the
set — useful with a few dozen positives). Randomness: weights from ``seed``; the batches and
latent vectors of an epoch from streams seeded by (seed, phase, cycle, epoch), so a resumed run
draws what an uninterrupted one draws.

Output folder::

    recipe.json           the resolved recipe
    losses.csv            one row per epoch: phase, cycle, epoch, loss_d, loss_g, d_real,
                          d_fake (mean discriminator probability of "real"), images, seconds
    diversity.csv         one row per cycle: diversity and memorisation figures
                          (:func:`deepmine.inference.generate.diversity`) of the cycle's samples
                          and of all samples so far
    samples/real.png      a grid of training positives (for comparison)
    samples/cycle_XX.png  a grid of the cycle's samples; samples/cycle_XX.npy the samples
    checkpoint.pt         latest state (resumable; generator checkpoint + training_state)
    pretrained.pt         state after pre-training (the start of every cycle)
    generators/cycle_XX.pt  the generator of each cycle (deepmine checkpoint format)
    generator.pt          the last cycle's generator (export it: ``deepmine export``)
    augmented.npy         all samples; augmented.npy.provenance.json
    summary.json          figures per cycle and overall

Checkpoints use :mod:`deepmine.training.checkpoint` (the generator is the checkpoint's model;
the discriminator, optimisers, RNG and history travel in ``training_state``), so
``deepmine export generator.pt`` works on any of them.

Modules
-------
``recipe.py``    the recipe keys and their defaults (:data:`GAN_DEFAULTS`), :func:`load_gan_recipe`
``networks.py``  generator and discriminator, their optimisers, one training step, BatchNorm
                 calibration, sampling; DiffAugment's :func:`translate`
``loop.py``      :func:`train_gan`: pre-training, cycles, checkpoints and resume
``outputs.py``   :func:`sample_grid` and the CSV, JSON and ``.npy`` files of a run
``ablation.py``  :func:`augmentation_ablation`: a classifier trained with and without GAN samples

Importing this package needs no torch; a run imports it.
"""
from __future__ import annotations

from .ablation import ABLATION_SETS, augmentation_ablation
from .loop import GanResult, train_gan
from .networks import GanNetworks, translate
from .outputs import sample_grid
from .recipe import BUILTIN, GAN_DEFAULTS, START_MODES, GanRecipe, load_gan_recipe

__all__ = ["GAN_DEFAULTS", "GanRecipe", "GanResult", "load_gan_recipe", "train_gan", "sample_grid",
           "augmentation_ablation", "ABLATION_SETS", "GanNetworks", "translate", "BUILTIN", "START_MODES"]
