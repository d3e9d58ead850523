"""PTNL (Wu et al., ICCV 2023): prompt tuning of CLIP under noisy labels; unsupervised prompt tuning."""
