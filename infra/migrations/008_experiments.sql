-- Champion/challenger (issue 21): the experiment a case was assigned in and its arm ('champion',
-- or the challenger's policy name), pinned with the policy when the case opened
-- (policies/experiments.py). NULL for cases in no experiment. Never updated after the first write.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS experiment text;
ALTER TABLE cases ADD COLUMN IF NOT EXISTS arm text;

-- `list --arm` and the arm comparison of `report` read the cases of one experiment.
CREATE INDEX IF NOT EXISTS cases_experiment_arm ON cases (experiment, arm, outstanding DESC, loan_id)
    WHERE experiment IS NOT NULL;
