"""What the web does with what Slack sends: `commands` answers `/jit`, `decisions` judges clicks on cards."""
