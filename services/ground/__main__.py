from services.ground.service import make
from services.kernel.runtime import run_service

if __name__ == "__main__":
    run_service("ground", make)
