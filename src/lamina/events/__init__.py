"""What invokes functions without a caller: event source mappings (pollers reading
SQS queues and RabbitMQ brokers) and schedules (EventBridge rules and EventBridge
Scheduler). Everything here calls `invoke/` like any other client."""
