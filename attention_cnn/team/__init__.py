"""Working as a team: sharing results through a DVC remote (:mod:`attention_cnn.team.remote`)."""
