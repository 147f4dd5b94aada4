"""What the experiments share: stages and their cache keys, the toy method protocol, toy judging, attack bookkeeping."""
