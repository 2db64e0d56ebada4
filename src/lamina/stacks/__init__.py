"""SAM templates deployed as stacks: `lamina deploy template.yaml`.

A client of Lamina's public API, like `cli/` and like SAM itself: the template is
read (`template`), its functions and layers built as `sam build` builds them
(`build`), SAM's resources expanded into the Lambda, SQS, EventBridge and Scheduler
resources they stand for (`transform`), compared with what the stack made last time
(`records`), and the difference applied (`deploy`) through each resource type's
boto3 calls (`handlers`), so that a stack can do nothing a boto3 user could not.
"""
