"""The book's plan: its seven parts and the sixty papers, one chapter each.

The catalogue is what the command line checks a chapter name or a part against, so a typo is refused with the
list of what exists instead of silently running nothing. A chapter is *written* once its
``book/<part>/<slug>.md`` exists; the rest are the roadmap shown on each part's index page.
"""
from __future__ import annotations

from dataclasses import dataclass

PARTS: dict[str, str] = {
    "generative": "Generative modelling with noise",
    "robustness": "Adversarial perturbation, robustness and certification",
    "explanations": "Explanations by perturbation, and learned representations",
    "physics-informed": "Physics-informed learning",
    "operators": "Neural operators, surrogates and learned solvers",
    "dynamics": "Dynamics, chaos and stochastic processes",
    "optimization": "Optimization and learning dynamics",
}


@dataclass(frozen=True)
class Paper:
    seed_number: int
    part: str
    slug: str
    title: str


_PLAN = """
56|generative|dpm-solver-pp|DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models
47|generative|dpm-solver-v3|DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model Statistics
46|generative|momentum-diffusion-sampling|Diffusion Sampling with Momentum for Mitigating Divergence Artifacts
60|generative|bdia-exact-inversion|Exact Diffusion Inversion via Bi-directional Integration Approximation
13|generative|stochastic-interpolants|Stochastic Interpolants: A Unifying Framework for Flows and Diffusions
19|generative|pfgm-pp|PFGM++: Unlocking the Potential of Physics-Inspired Generative Models
44|generative|light-schrodinger-bridge|Light Schrödinger Bridge
26|generative|multi-marginal-schrodinger-bridge|Multi-marginal Schrödinger Bridges with Iterative Reference Refinement
15|generative|singular-distribution-instance-noise|A likelihood approach to nonparametric estimation of a singular distribution using deep generative models
14|generative|wgan-gp-uncertainty|Uncertainty quantification in a mechanical submodel driven by a Wasserstein-GAN
4|robustness|crown-bound-propagation|Automatic Perturbation Analysis for Scalable Certified Robustness and Beyond
40|robustness|local-lipschitz-bounds|Efficiently Computing Local Lipschitz Constants of Neural Networks via Bound Propagation
5|robustness|consistency-randomized-smoothing|Robust Representation Consistency Model via Contrastive Denoising
10|robustness|expected-perturbation-score|Detecting Adversarial Data by Probing Multiple Perturbations Using Expected Perturbation Score
27|robustness|vit-patch-robustness|Are Vision Transformers Robust to Patch Perturbations?
9|robustness|bifurcation-observation-attack|A Novel Bifurcation Method for Observation Perturbation Attacks on Reinforcement Learning Agents
12|robustness|s4-perturb-then-diagonalize|Robustifying State-space Models for Long Sequences via Approximate Diagonalization
7|robustness|asr-hallucinations|Hallucinations in Neural Automatic Speech Recognition: Identifying Errors and Hallucinatory Models
3|explanations|robust-cnn-explainability|How explainable are adversarially-robust CNNs?
8|explanations|layer-masking|Towards Improved Input Masking for Convolutional Neural Networks
52|explanations|explanations-as-local-approximation|Which Explanation Should I Choose? A Function Approximation Perspective to Characterizing Post Hoc Explanations
2|explanations|visual-precision-search|Interpreting Object-level Foundation Models via Visual Precision Search
1|explanations|pixel-sentence-representations|Pixel Sentence Representation Learning
6|explanations|lightgcl-svd-contrastive|LightGCL: Simple Yet Effective Graph Contrastive Learning for Recommendation
33|explanations|causal-minimax-invariance|Which Invariance Should We Transfer? A Causal Minimax Learning Approach
25|physics-informed|physics-informed-gaussians|PIG: Physics-Informed Gaussians as Adaptive Parametric Mesh Representations
31|physics-informed|gp-spectral-mixture-pde|Solving High Frequency and Multi-Scale PDEs with Gaussian Processes
32|physics-informed|lagrangian-pinns|Lagrangian PINNs: A causality-conforming solution to failure modes of physics-informed neural networks
54|physics-informed|metalic-interface-conditions|Meta Learning of Interface Conditions for Multi-Domain Physics-Informed Neural Networks
22|physics-informed|random-grid-neural-processes|Random Grid Neural Processes for Parametric Partial Differential Equations
48|physics-informed|barron-nonlinear-elliptic|Neural Network Approximations of PDEs Beyond Linearity: A Representational Perspective
18|physics-informed|physics-informed-clustering-rom|Physics-informed cluster analysis and a priori efficiency criterion for the construction of local reduced-order bases
50|physics-informed|tumor-inverse-database-query|A for-loop is all you need. For solving the inverse problem in the case of personalized tumor growth modeling
29|operators|pde-refiner|PDE-Refiner: Achieving Accurate Long Rollouts with Neural PDE Solvers
35|operators|cape-channel-attention|Learning Neural PDE Solvers with Parameter-Guided Channel Attention
36|operators|latent-spectral-models|Solving High-Dimensional PDEs with Latent Spectral Models
34|operators|semilinear-neural-operators|Learning Semilinear Neural Operators: A Unified Recursive Framework For Prediction And Data Assimilation
21|operators|prose-multimodal-operators|PROSE: Predicting Operators and Symbolic Expressions using Multimodal Transformers
49|operators|continuous-space-time-simulation|Space and Time Continuous Physics Simulation From Partial Observations
20|operators|deep-conjugate-direction|A Deep Conjugate Direction Method for Iteratively Solving Linear Systems
23|operators|learning-to-relax-sor|Learning to Relax: Setting Solver Parameters Across a Sequence of Linear System Instances
11|dynamics|koopman-verified-spectra|Limits and Powers of Koopman Learning
59|dynamics|chaos-benchmark|Chaos as an interpretable benchmark for forecasting and data-driven modelling
43|dynamics|chaos-forecasting-scale-vs-knowledge|Model scale versus domain knowledge in statistical forecasting of chaotic systems
38|dynamics|medida-model-error-discovery|Discovery of interpretable structural model errors by combining Bayesian sparse regression and data assimilation
58|dynamics|slepian-independent-intervals|The Slepian model based independent interval approximation of persistency and zero-level exceedance distributions
53|dynamics|stable-neural-sdes|Stable Neural Stochastic Differential Equations in Analyzing Irregular Time Series Data
24|dynamics|fractional-noise-sde-inference|Variational Inference for SDEs Driven by Fractional Noise
42|dynamics|locally-regularized-neural-odes|Locally Regularized Neural Differential Equations: Some Black Boxes Were Meant to Remain Closed!
39|dynamics|digital-twin-neural-control|Control of Medical Digital Twins with Artificial Neural Networks
51|dynamics|martingale-policy-evaluation|Policy Evaluation and Temporal-Difference Learning in Continuous Time and Space: A Martingale Approach
16|optimization|variance-reduced-halpern|Variance Reduced Halpern Iteration for Finite-Sum Monotone Inclusions
17|optimization|penalty-bilevel|On Penalty Methods for Nonconvex Bilevel Optimization and First-Order Stochastic Approximation
55|optimization|blockwise-multiblock-bilevel|Blockwise Stochastic Variance-Reduced Methods with Parallel Speedup for Multi-Block Bilevel Optimization
28|optimization|modular-implicit-differentiation|Efficient and Modular Implicit Differentiation
57|optimization|greedy-block-coordinate-descent|Let's Make Block Coordinate Descent Converge Faster
37|optimization|sgd-dynamical-stability|The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent
30|optimization|dense-hebbian-networks|Dense Hebbian neural networks: a replica symmetric picture of supervised learning
45|optimization|bnn-surrogates-bayesopt|A Study of Bayesian Neural Network Surrogates for Bayesian Optimization
41|optimization|autonumerics-zero|AutoNumerics-Zero: Automated Discovery of State-of-the-Art Mathematical Functions
"""

PAPERS: tuple[Paper, ...] = tuple(
    Paper(int(number), part, slug, title)
    for number, part, slug, title in (line.split("|", 3) for line in _PLAN.strip().splitlines())
)
PAPERS_BY_SLUG: dict[str, Paper] = {paper.slug: paper for paper in PAPERS}


def papers_in_part(part: str) -> list[Paper]:
    """The planned papers of one part, in the order the part tells them."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; the parts are: {', '.join(PARTS)}")
    return [paper for paper in PAPERS if paper.part == part]
