"""Base config: every field of every job, with a one-line comment each.

Run: not directly; the other configs start from this one and change a few fields.
Expect: nothing on its own.
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    """Returns the base config (HW-EvRSNAS on NAS-Bench-201, Pixel 3 latency)."""
    c = config_dict.ConfigDict()
    c.job = 'search'  # 'search' | 'train_reference' | 'train_arch' | 'figure5'.
    c.seed = 0  # Fixes the whole run: GA, weight inits, batch choice.

    c.space = config_dict.ConfigDict()
    c.space.name = 'nb201'  # 'nb201' | 'ofa'.
    c.space.channels = 16  # NB201: channels of the first stage (16 in NAS-Bench-201).
    c.space.cells_per_stage = 5  # NB201: cells per stage (5 in NAS-Bench-201).
    c.space.width_mult = 1.2  # OFA: width multiplier, 1.0 or 1.2.
    c.space.resolution = 32  # OFA: input resolution of the network.
    c.space.feature_stages = '1,3,5'  # OFA: stages whose outputs are the RMI features.
    c.space.genome = config_dict.placeholder(str)  # train_arch: the genome to train, as text.

    c.data = config_dict.ConfigDict()
    c.data.source = 'embedded'  # 'embedded' (packaged sample) | 'folder' | 'tfds'.
    c.data.name = 'cifar10'  # tfds dataset name ('cifar10' | 'cifar100').
    c.data.root = config_dict.placeholder(str)  # 'folder': root holding split/label/image.
    c.data.num_classes = 10  # Classes of the task.
    c.data.image_size = 32  # Side of the (square) input images.
    c.data.resize = False  # Resize images of another stored size to image_size (bilinear).

    c.reference = config_dict.ConfigDict()
    c.reference.checkpoint = config_dict.placeholder(str)  # Trained reference; unset: packaged.
    c.reference.arch = ''  # 'resnet20' | 'ofa_max'; empty: the space's own reference.
    c.reference.depth = 20  # train_reference: ResNet depth (6n + 2).
    c.reference.bn_mode = 'eval'  # 'eval' (running stats) | 'train' (batch stats, as RMI-NAS).

    c.proxy = config_dict.ConfigDict()
    c.proxy.steps = 100  # N_train: SGD steps on the one batch.
    c.proxy.beta = 0.8  # Weight of the RMI loss against cross-entropy.
    c.proxy.learning_rate = 0.1  # Constant SGD learning rate (RMI-NAS).
    c.proxy.momentum = 0.9  # SGD momentum.
    c.proxy.weight_decay = 5e-4  # L2 weight decay.
    c.proxy.batch_size = 32  # Images in the one training batch.
    c.proxy.pool_size = 512  # Random images from which the lowest-CE batch is chosen.
    c.proxy.strategy = 'auto'  # 'auto' | 'vmap' (shared shapes) | 'loop' (exact networks).
    c.proxy.chunk_size = 0  # Members per compiled call; 0: the whole padded population.
    c.proxy.conv_impl = 'auto'  # vmap form: 'auto' | 'xla' | 'im2col' convolutions.

    c.hardware = config_dict.ConfigDict()
    c.hardware.metric = 'latency'  # 'latency' | 'energy' | 'flops' | 'params' | ...
    c.hardware.device = 'pixel3'  # edgegpu | raspi4 | edgetpu | pixel3 | eyeriss | fpga.
    c.hardware.limit = 10.0  # Omega, in the metric's unit (ms, mJ, MFLOPs, M params).
    c.hardware.dataset = 'cifar10'  # Table to read: cifar10 | cifar100 | ImageNet16-120.
    c.hardware.missing = 'error'  # Values the table lacks: 'error' | 'infeasible' | 'predict'.
    c.hardware.table = config_dict.placeholder(str)  # A converted full table; unset: packaged.
    c.hardware.extra = ''  # More constraints, e.g. 'flops<=100;latency@raspi4<=20'.

    c.ga = config_dict.ConfigDict()
    c.ga.population = 20  # N_pop.
    c.ga.generations = 100  # N_gen.
    c.ga.tournament = 5  # Tournament size (drawn without replacement).
    c.ga.elites = 1  # Best members copied unchanged.
    c.ga.crossover = 0.5  # Uniform crossover: probability of a gene from the first parent.
    c.ga.mutation = 0.1  # Per-gene mutation probability (uniform resample).
    c.ga.init = 'random'  # 'random' | 'rejection' (feasible only, OFA's way).
    c.ga.max_draws = 100_000  # Rejection sampling gives up after this many draws.

    c.train = config_dict.ConfigDict()
    c.train.epochs = 200  # Epochs over the training split.
    c.train.batch_size = 128  # Images per step.
    c.train.learning_rate = 0.1  # Peak SGD learning rate (cosine schedule to 0).
    c.train.momentum = 0.9  # SGD momentum (Nesterov off).
    c.train.weight_decay = 1e-4  # L2 weight decay.
    c.train.max_steps = 0  # Stop after this many steps if > 0 (for smoke runs).
    c.train.eval_every = 1  # Evaluate on the test split every this many epochs.
    c.train.checkpoint_every = 1  # Save a checkpoint every this many epochs.

    c.figure5 = config_dict.ConfigDict()
    c.figure5.population = 50  # Population to fill in each trial.
    c.figure5.seeds = 10  # Trials averaged per budget.
    c.figure5.limits = ''  # Budgets, comma separated; empty: a default sweep for the space.
    return c
