"""Config sections of the generative decoders: FLIG and SMR + ICG, and the retina simulator.

Defaults are the papers' own values (FLIG: Zhou et al., IEEE TCDS 2023, Appendix B, Natural
Movie-I column; SMR + ICG: Du et al., AAAI 2020, "Parameter settings"). Where a paper leaves a
choice open the field's usual choice is the default and the comment says so. This module imports
nothing from :mod:`neuralign.config` so that ``config.py`` can import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FligLossWeights(_Section):
    """The trade-off weights of Eq. 17 (Appendix B; lambda_s = 100 as on Natural Movie-I)."""

    mle: float = Field(0.01, ge=0)
    g: float = Field(0.01, ge=0, description="adversarial terms L_G of Eq. 8")
    x: float = Field(100.0, ge=0)
    xf: float = Field(100.0, ge=0)
    s: float = Field(100.0, ge=0)
    z: float = Field(10.0, ge=0)
    rsa: float = Field(1.0, ge=0)
    jc: float = Field(10.0, ge=0)


class FligConfig(_Section):
    """FLIG: Table V auto-encoder (stage 1), adversarial cross-modal Real-NVP (stage 2)."""

    # Stage 1. Table V says "Dropout" without a rate; 0.1 keeps a 90-dim code usable on ~2k images.
    cae_dropout: float = Field(0.1, ge=0, lt=1)
    # Channel multiplier on Table V's 64/128/256/256 (1.0 = the paper; < 1 for a CPU budget).
    cae_width: float = Field(1.0, gt=0, le=4)
    cae_epochs: int = Field(40, ge=1)
    cae_batch_size: int = Field(64, ge=2)
    cae_lr: float = Field(1e-5, gt=0, description="Appendix B")
    # Stage 1 sees only images, so unpaired images (``extra_images`` of paired.npz) train the CAE
    # too; validation stays on held-out paired training images.
    cae_use_extra_images: bool = True
    # "constant" is the paper's Adam; "one_cycle" (warm-up, then anneal to 0) and "cosine" (anneal
    # only) converge in the few epochs a CPU budget allows. Measured on the retina simulator: the
    # CAE needs the warm-up (validation MSE 0.012 vs 0.0175 without, 10 epochs at 3e-3); the flows
    # were unstable at a one-cycle peak of 3e-3 and train stably annealed from 1e-3.
    cae_lr_schedule: Literal["constant", "cosine", "one_cycle"] = "constant"
    # Stage 2. Basic flow unit: d -> 128 -> 128 -> 128 -> M - d, Tanh (Appendix B).
    n_units_x: int = Field(15, ge=1)
    n_units_s: int = Field(1, ge=1)
    coupling_hidden: int = Field(128, ge=1)
    coupling_layers: int = Field(3, ge=1, description="hidden layers of s(.) and t(.)")
    # False: the same two slices in every unit (Eq. 5 as written); True: a fixed permutation
    # before each unit, so every unit splits the dimensions differently (Real-NVP's varying masks).
    coupling_permute: bool = False
    flow_epochs: int = Field(100, ge=1)
    flow_batch_size: int = Field(64, ge=4)
    flow_lr: float = Field(5e-5, gt=0)
    flow_lr_schedule: Literal["constant", "cosine", "one_cycle"] = "constant"
    disc_lr: float = Field(5e-5, gt=0)
    # Gradient-penalty weight: [41] (Gulrajani et al.) use 10; the paper gives none.
    gp_weight: float = Field(10.0, ge=0)
    jc_lambda_plus: float = Field(0.1, gt=0, description="Eq. 16, Natural Movie-I")
    jc_lambda_minus: float = Field(0.05, ge=0)
    loss_weights: FligLossWeights = FligLossWeights()
    # "Standardize ... the neural signals to [-1, 1]" (Sec. IV-A): per unit, training min/max.
    response_scaling: Literal["minmax", "zscore"] = "minmax"

    @model_validator(mode="after")
    def _check_jc(self) -> FligConfig:
        if self.jc_lambda_minus > self.jc_lambda_plus:
            raise ValueError("jc_lambda_minus must not exceed jc_lambda_plus")
        return self


class SmrConfig(_Section):
    """SMR (Eq. 5-6) and its ablations: which inverse covariances are learned."""

    # SMR-O: learn only Omega^-1; SMR-IT: only Sigma_r^-1 and Sigma_c^-1; SMR: all three.
    learn_output: bool = True  # O: Omega^-1 (output structure)
    learn_input: bool = True  # I: Sigma_r^-1 (input structure)
    learn_task: bool = True  # T: Sigma_c^-1 (task structure)
    sparse: bool = True  # graphical lasso (l1) vs the non-sparse case
    lam: float = Field(1e-3, ge=0, description="lambda (fixed in the paper)")
    lam1: float | None = Field(None, ge=0, description="None = 5-fold CV over lam1_grid")
    lam1_grid: list[float] = Field(default_factory=lambda: [1e-2, 1e-1, 1.0, 10.0, 100.0])
    # Non-sparse case: lambda_2 = lambda_3 = 1e-6 (paper). Sparse case: the l1 weights applied to
    # the correlation-scaled problem (the paper cross-validates them; these are our defaults).
    lam2: float = Field(0.05, ge=0)
    lam3: float = Field(0.05, ge=0)
    n_iter: int = Field(10, ge=1, description="alternating-optimisation sweeps (paper: ~50)")
    tol: float = Field(1e-3, ge=0, description="stop sweeping once Eq. 6 changes by less (relative)")
    closed_form_max: int = Field(3000, ge=1, description="largest K*D solved by Proposition 1")
    cv_folds: int = Field(5, ge=2)
    cv_iter: int = Field(2, ge=1, description="sweeps per fold while choosing lam1")


class FeatureCnnConfig(_Section):
    """The frozen image CNN whose multilayer features SMR decodes."""

    # "builtin": a small conv auto-encoder neuralign trains on the training (+ extra) images.
    # "torchvision:<arch>:<weights file>" / "timm:<arch>:<weights file>": frozen, from disk.
    encoder: str = "builtin"
    layers: list[str] = Field(default_factory=list, description="module names for torch hubs")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64])
    pool: int = Field(3, ge=1, description="each layer average-pooled to pool x pool")
    epochs: int = Field(15, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=2)


class IcgConfig(_Section):
    """ICG (Eq. 8-9): alpha = 0.5, beta = 1 (paper); alpha 0 / beta 1 = CVAE; 1 / 0 = CGAN."""

    alpha: float = Field(0.5, ge=0)
    beta: float = Field(1.0, ge=0)
    top_k: int = Field(5000, ge=1, description="most decodable CNN units used as the condition")
    latent_dim: int = Field(512, ge=1, description="Vim-1: 512, FaceBold: 256")
    # Eq. 9 maximises the fakes' KL without bound; IntroVAE (Huang et al. 2018, the model ICG
    # follows) bounds it with a hinge [m - KL]^+. m is per image, in nats.
    margin: float = Field(50.0, ge=0)
    # L_AE's pixel variance: "unit" is Eq. 12 (half the summed squared error); "calibrated" sets it
    # to the batch's mean squared error (sigma-VAE), which weighs reconstruction against the KL terms
    # by how well the images are actually reconstructed.
    likelihood: Literal["unit", "calibrated"] = "unit"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 128])
    # > 0: the generator adds a linear read-out of the condition (this many pixels a side,
    # upsampled) to its logits, so it contains the linear features -> pixels decoder (0 = off)
    linear_skip: int = Field(0, ge=0)
    epochs: int = Field(30, ge=1)
    # IntroVAE's num_vae (its reference code): the first epochs train the plain CVAE (alpha = 0,
    # beta = 1) before the introspective terms start (they count toward ``epochs``).
    warmup_epochs: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0)
    lr_schedule: Literal["constant", "cosine", "one_cycle"] = "constant"  # paper: constant
    use_extra_images: bool = True
    sample_z: bool = False  # decode test images at z = 0 (the prior mean) unless True
    # > 0: decode as the average of this many prior draws, E_z[G(z, h)], instead of one z
    decode_samples: int = Field(0, ge=0)
    # The CVAE and CGAN baselines of Table 3, trained with the same budget for the report.
    train_baselines: bool = True
    # A share of the paired training rows held out of the generator's training: each epoch decodes
    # them from their out-of-fold predicted features and the epoch with the best SSIM is kept
    # (0 = keep the last epoch, as the paper).
    val_fraction: float = Field(0.0, ge=0, lt=0.5)


class PriorMapConfig(_Section):
    """MAP decoding with a learned denoiser prior (plug-and-play): the reference generative
    decoder. Defaults measured on development seeds of the retina simulator, never on a
    reported split (docs/generative_protocol.md)."""

    # The denoiser (the image prior): trained on images alone, on random crops.
    denoiser_width: int = Field(32, ge=4)
    denoiser_depth: int = Field(6, ge=3)
    denoiser_steps: int = Field(1500, ge=1, description="Adam steps of batch_size crops")
    denoiser_batch_size: int = Field(32, ge=1)
    denoiser_crop: int = Field(32, ge=8, description="crop side; the network is convolutional")
    denoiser_lr: float = Field(2e-3, gt=0)
    denoiser_sigma_max: float = Field(0.2, gt=0, description="noise SDs trained: U(0, max)")
    use_extra_images: bool = True  # unpaired images train the prior (they need no responses)
    # The likelihood: "poisson" (exp GLM, spike counts), "gaussian" (linear, signed responses);
    # "auto" picks poisson when every training response is >= 0.
    likelihood: Literal["auto", "poisson", "gaussian"] = "auto"
    encoder_components: int = Field(100, ge=1, description="PCA components the encoder sees")
    encoder_alpha: float = Field(1e-2, ge=0, description="L2 of the Poisson GLM")
    # Half-quadratic splitting: the noise level anneals sigma_start -> sigma_end over n_outer
    # steps, each with n_inner Adam steps on the likelihood + coupling term.
    sigma_start: float = Field(0.1, gt=0)
    sigma_end: float = Field(0.01, gt=0)
    n_outer: int = Field(12, ge=1)
    n_inner: int = Field(20, ge=1)
    inner_lr: float = Field(0.01, gt=0)
    # The prior's weight: chosen from mu_grid by SSIM on held-out training rows (val_fraction);
    # ``mu`` is the value used when the grid is empty.
    mu: float = Field(0.03, gt=0)
    mu_grid: list[float] = Field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    val_fraction: float = Field(0.1, gt=0, lt=0.5)


class GenerativeConfig(_Section):
    """What ``model.name: flig`` / ``smr_icg`` train on top of the shared training section."""

    flig: FligConfig = FligConfig()
    smr: SmrConfig = SmrConfig()
    feature_cnn: FeatureCnnConfig = FeatureCnnConfig()
    icg: IcgConfig = IcgConfig()
    prior_map: PriorMapConfig = PriorMapConfig()
    # Paired data: responses (N, R, M) are averaged over repetitions (Sec. IV-A, RGC data).
    image_size: int = Field(64, ge=16, description="FLIG: a multiple of 16 (Table V halves it 4 times)")
    grayscale: bool = True


class RetinaSimConfig(_Section):
    """``neuralign simulate --modality retina``: LNP ganglion cells on natural-looking images."""

    n_cells: int = Field(90, ge=2, description="Natural Movie-I has 90 RGCs")
    n_images: int = Field(1800, ge=20)
    test_fraction: float = Field(0.1, gt=0, lt=1, description="10 % hold-out (Table II)")
    test_repetitions: int = Field(10, ge=1)
    train_repetitions: int = Field(10, ge=1)
    n_extra_images: int = Field(2000, ge=0, description="unpaired images (ICG augmentation)")
    # One response bin = one frame (1/30 s in Natural Movie-I); the rate is per bin.
    mean_rate: float = Field(1.0, gt=0, description="mean spike count per cell per image")
    # "lnp": the textbook centre-surround LNP cell (the LNP baseline is then the true model class).
    # "subunit": the centre pools rectified bipolar-like subunits (LN-LN; Hochstein & Shapley
    # 1976, Turner & Rieke 2016), the nonlinear spatial integration that makes LNP fail on real
    # ganglion cells under natural stimuli (FLIG's Table III: LNP PCC 0.011).
    cell_model: Literal["lnp", "subunit"] = "lnp"


class VoxelResponseConfig(_Section):
    """The voxel response model shared by the fMRI-like simulators (``voxels``, ``digits``).

    Each voxel is a Gaussian population receptive field (pRF) on a retinotopic map pooling the
    local energy of oriented Gabor channels and a local-contrast channel (compressively) plus a
    little signed luminance; the trial's drive is blurred over trial lags by a canonical HRF and
    carries spatially smooth, low-rank and independent noise; betas are z-scored per voxel.
    """

    # pRF size grows linearly with eccentricity as in human V1-V3 (Dumoulin & Wandell 2008).
    prf_sigma_fovea: float = Field(1.5, gt=0, description="pRF Gaussian SD at the image centre (px)")
    prf_sigma_slope: float = Field(0.12, ge=0, description="pRF SD increase per px of eccentricity")
    cortical_magnification: float = Field(1.4, ge=1, description="radial warp exponent: >1 packs "
                                          "more voxels near the centre (1 = uniform grid)")
    # Compressive spatial summation (Kay et al. 2013): pooled energy ** exponent.
    compressive_exponent: float = Field(0.5, gt=0, le=1)
    luminance_weight: float = Field(0.6, ge=0, description="SD of the signed luminance weight "
                                    "(energy channel weights sum to 1)")
    channel_selectivity: float = Field(1.5, ge=0, description="softmax gain of the channel-mix "
                                       "maps (0 = every voxel mixes channels equally)")
    map_smoothness_px: float = Field(8.0, gt=0, description="length scale over the visual field of "
                                     "the channel-mix and luminance-weight maps")
    gain_min: float = Field(0.2, ge=0, le=1, description="voxel signal gain ~ U(gain_min, 1)")
    # Noise SD of one trial relative to the signal SD of a gain-1 voxel; split by variance into
    # a spatially smooth part, a low-rank (global) part and independent noise.
    # With the other defaults, a ridge pixel decoder's test pixel correlation on the default voxels
    # regime is ~0.3 (SSIM ~0.3): meaningful but far from perfect, as on Vim-1.
    noise_sd: float = Field(0.7, ge=0)
    noise_smooth_fraction: float = Field(0.3, ge=0, le=1)
    noise_shared_fraction: float = Field(0.2, ge=0, le=1)
    noise_factors: int = Field(5, ge=1, description="rank of the shared noise")
    noise_length_px: float = Field(4.0, gt=0, description="spatial SD of the smooth noise (px of the map)")
    # The beta of a trial is the BOLD at the HRF peak (5 s) after its onset, so trials spaced by
    # trial_interval_s leak into each other: kernel h(5 + k * ITI) / h(5), k = 0..hrf_lags - 1,
    # with SPM's double-gamma h. At 4 s (Vim-1's trial length): 1, 0.33, -0.04, -0.08, -0.04.
    trial_interval_s: float = Field(4.0, gt=0)
    hrf_lags: int = Field(6, ge=1, description="trial lags of the HRF kernel (1 = no carry-over)")

    @model_validator(mode="after")
    def _check_noise(self) -> VoxelResponseConfig:
        if self.noise_smooth_fraction + self.noise_shared_fraction > 1:
            raise ValueError("noise_smooth_fraction + noise_shared_fraction must not exceed 1")
        return self


class VoxelSimConfig(_Section):
    """``voxels`` simulator: a Vim-1-like fMRI regime, more voxels than training images."""

    n_voxels: int = Field(1200, ge=4)
    n_train: int = Field(600, ge=2)
    n_test: int = Field(60, ge=1)
    train_repetitions: int = Field(2, ge=1, description="Vim-1: 2")
    test_repetitions: int = Field(10, ge=1, description="Vim-1: 13")
    n_extra_images: int = Field(2000, ge=0, description="unpaired images (ICG augmentation)")
    response: VoxelResponseConfig = VoxelResponseConfig()


class DigitsSimConfig(_Section):
    """``digits`` simulator: small-n handwritten 6s and 9s (the '69' fMRI set: 100 digits)."""

    n_voxels: int = Field(2000, ge=4, description="the public file has 3092 voxels")
    n_train: int = Field(90, ge=2)
    n_test: int = Field(10, ge=1)
    train_repetitions: int = Field(1, ge=1)
    test_repetitions: int = Field(5, ge=1)
    n_extra_images: int = Field(1000, ge=0, description="unpaired synthetic digits")
    stroke_width: tuple[float, float] = Field((3.0, 7.0), description="pen width range (px at 64 x 64)")
    max_slant: float = Field(0.35, ge=0, description="largest horizontal shear (px per px)")
    max_shift: float = Field(4.0, ge=0, description="largest position jitter (px)")
    scale: tuple[float, float] = Field((0.75, 1.0), description="glyph height range (x 44 px)")
    elastic_px: float = Field(1.5, ge=0, description="SD of the smooth displacement field (px)")
    response: VoxelResponseConfig = VoxelResponseConfig()

    @model_validator(mode="after")
    def _check_ranges(self) -> DigitsSimConfig:
        for name in ("stroke_width", "scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high")
        return self
