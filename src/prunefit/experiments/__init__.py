"""The paper's studies (Table 3, Pareto fronts, erasure matrix, distillation ablation, figures), above the commands."""
