from services.kernel.runtime import run_service
from services.relay.service import make

if __name__ == "__main__":
    run_service("relay", make)
