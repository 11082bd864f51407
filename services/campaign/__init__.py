"""Monte Carlo campaigns of the twin (issue 17): the campaign file, the runner, the report."""
