document.getElementById("quick-exit").addEventListener("click",function(e){e.preventDefault();document.body.innerHTML="";window.location.replace(this.href);});
