"""The HTTP front: Lambda's REST API from botocore's model, SigV4, error mapping."""
